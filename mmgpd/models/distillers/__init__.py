from .gpd_distiller import GPDDistiller

__all__ = ['GPDDistiller']
