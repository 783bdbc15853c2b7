"""Networks of AdaptSegNet, built by the names the original command lines use."""
import utils.runtime  # noqa: F401  (process settings that must precede paddle)
from model.deeplab_multi import DeeplabMulti, DeeplabMulti4
from model.deeplab_vgg import DeeplabVGG
from model.discriminator import CWDiscriminator, FCDiscriminator

MODELS = {
    "DeeplabMulti": DeeplabMulti,
    "DeeplabMulti4": DeeplabMulti4,  # ADVENT's: the classifiers sum all four branches
    "DeeplabVGG": DeeplabVGG,
    "FCDiscriminator": FCDiscriminator,
    "CWDiscriminator": CWDiscriminator,
}
# The original training script calls the multi-level ResNet "DeepLab".
MODEL_ALIASES = {"DeepLab": "DeeplabMulti"}
# The segmentation networks a script's --model names; DeeplabMulti4 is ADVENT's.
SEGMENTATION_MODELS = ["DeeplabMulti", "DeepLab", "DeeplabMulti4", "DeeplabVGG"]
MODEL_HELP = ("the segmentation network: DeeplabMulti (alias DeepLab; AdaptSegNet's classifiers sum two branches), "
              "DeeplabMulti4 (ADVENT's sum all four; the same parameter names) or DeeplabVGG")


def build_model(name, num_classes=19, **kwargs):
    """Build a network by its original name (``DeeplabMulti``/``DeepLab``, ``DeeplabVGG``,
    ``FCDiscriminator``, ``CWDiscriminator``), or ``DeeplabMulti4`` (ADVENT's four-branch classifiers)."""
    canonical = MODEL_ALIASES.get(name, name)
    if canonical not in MODELS:
        known = ", ".join(sorted(set(MODELS) | set(MODEL_ALIASES)))
        raise ValueError("unknown model {!r}: choose one of {}".format(name, known))
    return MODELS[canonical](num_classes=num_classes, **kwargs)
