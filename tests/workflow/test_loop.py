import pytest
import torch

from pyro_vae.workflow.data import ImageData
from pyro_vae.workflow.loop import EpochState, Hook, StopRequested, run_epoch


class _CountingSVI:
    """Returns the sum of the batch's indices as its loss (times N, as svi.step scales)."""

    def step(self, x, idx):
        return float(idx.sum()) * 40


class _Recorder(Hook):
    def __init__(self, stop_after=None):
        self.events, self.stop_after = [], stop_after

    def epoch_started(self, epoch):
        self.events.append(("epoch", epoch.number))

    def step_started(self, epoch):
        self.events.append(("step", epoch.step + 1))

    def step_finished(self, epoch):
        if epoch.step == self.stop_after:
            raise StopRequested

    def epoch_finished(self, epoch):
        self.events.append(("end", epoch.loss))


def _data():
    return ImageData(torch.rand(40, 5), torch.zeros(40, dtype=torch.long))


def test_an_epoch_steps_every_batch_once_and_calls_the_hooks_in_order():
    data, recorder = _data(), _Recorder()
    epoch = EpochState.begin(data, 3, seed=0)
    loss = run_epoch(_CountingSVI(), data, 10, epoch, [recorder])
    assert recorder.events[:3] == [("epoch", 3), ("step", 1), ("step", 2)]
    assert recorder.events[-1] == ("end", loss) and epoch.step == 4 and epoch.done
    assert loss == pytest.approx(sum(range(40)) * 10 / 40)  # each step: sum(idx) per image, weighted by 10 images


def test_a_stopped_pass_resumes_from_its_position_with_the_same_batches():
    data = _data()
    whole = EpochState.begin(data, 2, seed=5)
    full = [idx for idx, _ in whole.batches(data, 10)]
    stopped = EpochState.begin(data, 2, seed=5)
    with pytest.raises(StopRequested):
        run_epoch(_CountingSVI(), data, 10, stopped, [_Recorder(stop_after=2)])
    resumed = EpochState.begin(data, 2, seed=5, position=stopped.position())
    rest = [idx for idx, _ in resumed.batches(data, 10)]
    assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(rest, full[2:]))
    loss = run_epoch(_CountingSVI(), data, 10, resumed)
    assert loss == pytest.approx(sum(range(40)) * 10 / 40)  # the stopped steps count in the mean
