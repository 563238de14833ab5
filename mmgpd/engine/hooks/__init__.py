from .gpd_hook import GPDHook

__all__ = ['GPDHook']
