"""GPD algorithm, distiller, KD losses and static-teacher methods (registered in
``mmgpd.registry.MODELS``)."""
from .algorithms import *  # noqa: F401,F403
from .distillers import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .methods import *  # noqa: F401,F403
