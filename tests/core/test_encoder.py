"""Where the encoder comes from: the default from its package, anything else as given, clear errors."""

import pytest
import transformers

from continual_adapters.core import encoder as encoder_module
from continual_adapters.core.errors import CadaptError
from continual_adapters.core.model import ContinualModel


def test_default_encoder_comes_from_its_package_when_installed():
    assert encoder_module.default_encoder_installed()
    path = encoder_module.local_path_for(encoder_module.DEFAULT_ENCODER)
    assert path != encoder_module.DEFAULT_ENCODER and (
        transformers.AutoConfig.from_pretrained(path).model_type == "bert"
    )
    assert encoder_module.local_path_for("some/other-encoder") == "some/other-encoder"


def test_default_encoder_without_its_extra_names_the_extra(monkeypatch):
    """Without the `minilm` extra the default encoder's name goes to the hub; when that fails (offline),
    the error names the extra to install or says to name another encoder."""
    seen = []

    def offline(location, **kwargs):
        seen.append(location)
        raise OSError("we could not connect to the hub")

    monkeypatch.setattr(encoder_module, "default_encoder_installed", lambda: False)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", offline)
    with pytest.raises(CadaptError, match=r"continual_adapters\[minilm\].*--encoder"):
        ContinualModel.from_pretrained()
    assert seen == [encoder_module.DEFAULT_ENCODER]
    with pytest.raises(CadaptError) as info:
        ContinualModel.from_pretrained("some/other-encoder")
    assert "minilm" not in str(info.value)
