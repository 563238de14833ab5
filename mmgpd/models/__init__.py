"""GPD algorithm, distiller and KD losses (registered in ``mmgpd.registry.MODELS``)."""
