from .gpd import GPD

__all__ = ['GPD']
