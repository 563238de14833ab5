from .gpd_hook import GPDHook
from .kcd_hook import KCDHook

__all__ = ['GPDHook', 'KCDHook']
