"""Registry set-up in the style of ``mmpretrain.utils.register_all_modules``."""
import datetime
import warnings


def register_all_modules(init_default_scope: bool = True) -> None:
    """Import every mmgpd module that registers something.

    Registration happens as a side effect of import; MMEngine also imports the
    registries' ``locations`` lazily, so this is only needed by code that looks
    modules up in mmgpd's registries directly.

    Args:
        init_default_scope (bool): Whether to set the default scope to ``'mmgpd'``
            so that ``Registry.build`` looks in mmgpd's registries first.  If the
            current default scope is another one, a new, uniquely named
            ``DefaultScope`` instance is created, as mmpretrain does.
            Defaults to True.
    """
    from mmengine import DefaultScope

    import mmgpd.datasets  # noqa: F401,F403
    import mmgpd.engine  # noqa: F401,F403
    import mmgpd.evaluation  # noqa: F401,F403
    import mmgpd.models  # noqa: F401,F403

    if not init_default_scope:
        return
    current = DefaultScope.get_current_instance()
    never_created = current is None or not DefaultScope.check_instance_created('mmgpd')
    if never_created:
        DefaultScope.get_instance('mmgpd', scope_name='mmgpd')
        return
    if current.scope_name != 'mmgpd':
        warnings.warn(
            f'The current default scope "{current.scope_name}" is not "mmgpd"; '
            '`register_all_modules` will force the current default scope to be '
            '"mmgpd". If this is not expected, call it with '
            '`init_default_scope=False`.')
        new_name = f'mmgpd-{datetime.datetime.now()}'
        DefaultScope.get_instance(new_name, scope_name='mmgpd')
