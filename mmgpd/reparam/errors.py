"""Errors raised by the reparameterization core."""
from typing import List, Tuple

__all__ = ['UnsupportedModuleError', 'IRVerificationError']


class UnsupportedModuleError(TypeError):
    """The student holds modules (or ops) that IR has no exact rule for.

    Attributes:
        modules (list[tuple[str, str, str]]): ``(path, type, reason)`` of every
            unsupported module or operation, in forward order.
    """

    def __init__(self, modules: List[Tuple[str, str, str]]):
        self.modules = list(modules)
        lines = '\n'.join(f'  - {path or "<model>"} ({typ}): {why}'
                          for path, typ, why in self.modules)
        super().__init__(
            f'Inverse reparameterization cannot widen {len(self.modules)} '
            f'module(s) of this student exactly; no dynamic teacher was built:\n'
            f'{lines}')


class IRVerificationError(RuntimeError):
    """The built dynamic teacher does not reproduce the student on the probe batch.

    Attributes:
        where (str): The first deviating module, when it could be found
            (``verify.locate_deviation``).
    """

    def __init__(self, message: str, where: str = ''):
        super().__init__(message)
        self.where = where
