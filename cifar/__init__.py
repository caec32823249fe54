"""CIFAR-10 training: the modules the pipeline's stages call and, for a notebook, their five
calls (cifar.notebook: Params, load_params, load_data, train, evaluate, grad_cam).

Every stage imports this package, so it stays light: the notebook calls load on first use.
"""

_NOTEBOOK_CALLS = ("Params", "load_params", "load_data", "train", "evaluate", "grad_cam")


def __getattr__(name: str):
    if name in _NOTEBOOK_CALLS:
        from cifar import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'cifar' has no attribute {name!r}")
