"""The training configs' dropout_rate: the network a run builds, and values refused."""

from __future__ import annotations

import pytest

from tpem_seg.errors import TpemSegError
from tpem_seg.train.config import FinetuneConfig, PretrainConfig, load_config


def test_dropout_rate_reaches_the_network_config():
    config = load_config(FinetuneConfig, sets=["dropout_rate=0.1", "model=unetr-test",
                                               "simulated.count=1", "simulated.with_labels=true"])
    assert config.model_config(out_channels=2).dropout_rate == 0.1
    assert PretrainConfig(model="unetr-test").model_config().dropout_rate == 0.0  # the named config's


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_out_of_range_is_refused(rate):
    with pytest.raises(TpemSegError, match="dropout_rate"):
        load_config(FinetuneConfig, sets=[f"dropout_rate={rate}", "simulated.count=1"])
