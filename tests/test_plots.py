"""Pictures of a run: the class-sorted sample grid, samples along training, and `catgan plot`."""

import pytest
import torch
from PIL import Image

from catgan.cli import main
from catgan.config import CatGANError, TrainConfig
from catgan.models import CatGAN
from catgan.plots import class_grid, class_sorted_samples, plot_run
from catgan.training import train


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits):
    config = TrainConfig(out_dir=str(tmp_path_factory.mktemp("runs")), epochs=4, batch_size=50, latent_dim=16,
                         d_width=8, g_width=8, feature_dim=32, log_every=5, eval_every=2, sample_every=2,
                         progress=False, device="cpu")
    return train(config, data=digits, log=lambda message: None)


def test_class_sorted_samples_put_each_image_in_the_row_of_its_predicted_class():
    torch.manual_seed(0)
    model = CatGAN(TrainConfig(latent_dim=8, d_width=8, g_width=8, feature_dim=16), (1, 8, 8), num_clusters=4)
    rows, share = class_sorted_samples(model, per_class=5, pool_per_class=10)
    assert len(rows) == 4 and share.sum().item() == pytest.approx(1.0)
    assert model.generator.training and model.discriminator.training  # training modes restored
    model.eval()
    with torch.no_grad():
        for c, images in enumerate(rows):
            assert len(images) <= 5
            if len(images):
                probs = torch.softmax(model.discriminator(images), dim=1)
                assert (probs.argmax(dim=1) == c).all()
                assert torch.all(probs[:-1, c] >= probs[1:, c])  # most confident first


def test_a_finished_run_has_its_pictures(finished):
    run_dir = finished.run_dir
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["epoch-0002.png", "epoch-0004.png"]
    with Image.open(run_dir / "samples_by_class.png") as image:
        assert image.size[1] > 200  # ten labelled rows


def test_class_grid_writes_one_row_per_cluster(tmp_path):
    sizes = {}
    for k in (3, 9):
        torch.manual_seed(0)
        model = CatGAN(TrainConfig(latent_dim=8, d_width=8, g_width=8, feature_dim=16), (1, 8, 8), num_clusters=k)
        class_grid(model, tmp_path / f"grid{k}.png", per_class=4)
        with Image.open(tmp_path / f"grid{k}.png") as image:
            sizes[k] = image.size
    assert abs(sizes[3][0] - sizes[9][0]) < 0.1 * sizes[3][0]  # four images per row either way (labels vary)
    assert sizes[9][1] > 2 * sizes[3][1]  # three times the rows (and the same title)


def test_plot_run_draws_every_figure(finished, tmp_path):
    written = plot_run(finished.run_dir, tmp_path / "plots")
    assert sorted(p.name for p in written) == sorted(
        ["losses.png", "entropies.png", "gradients.png", "d_scores.png", "fake_classes.png", "test.png"]
    )
    for path in written:
        with Image.open(path) as image:
            assert image.size[0] >= 500


def test_catgan_plot_from_the_command_line(finished, capsys):
    assert main(["plot", str(finished.run_dir)]) == 0
    assert "wrote 6 plots to" in capsys.readouterr().out
    assert (finished.run_dir / "plots" / "gradients.png").is_file()


def test_plot_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "is not a catgan run directory" in capsys.readouterr().err
    with pytest.raises(CatGANError, match="no logged training steps"):
        (tmp_path / "metrics.jsonl").write_text("")
        plot_run(tmp_path)


def test_plot_skips_a_half_written_last_line_and_refuses_an_unwritable_folder(finished, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished.run_dir, copy)
    with open(copy / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "d": {"loss')  # a trainer in the middle of writing a line
    assert len(plot_run(copy)) == 6
    (tmp_path / "a-file").write_text("")
    assert main(["plot", str(copy), "--out", str(tmp_path / "a-file")]) == 2
    assert "cannot write plots into" in capsys.readouterr().err
