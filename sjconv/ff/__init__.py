"""Spiking forward-forward training (Hinton 2022) on SpikingJelly LIF layers: learning without
backpropagation between layers, independent of conversion (docs/methods.md#forward-forward).

    from sjconv.ff import FFNet, ff_data, train_ff, load_ff
    x_train, y_train, x_test, y_test = ff_data("digits")          # [N, 64] in [0, 1], labels
    net = FFNet([64, 500, 500], num_classes=10, T=8)                # LIF layers, direct input current
    train_ff(net, x_train, y_train, epochs=30)                      # joint schedule, hard negatives
    accuracy = (net.predict(x_test) == y_test).float().mean()       # goodness readout

The names below are loaded on first use (PEP 562): ``sjconv.ff.options`` (the choices the
command line checks) imports no torch.
"""

import importlib

#: public name -> the submodule that defines it
_HOMES = {
    **dict.fromkeys(["FFNet", "FFLayer", "overlay", "neutral", "encode", "rms_normalize", "goodness", "ff_loss"],
                    ".core"),
    **dict.fromkeys(["train_ff", "ff_step", "layer_optimizers", "random_wrong_labels", "hard_wrong_labels",
                     "train_readout", "BPTTNet", "train_bptt"], ".train"),
    **dict.fromkeys(["save_ff", "load_ff", "read_ff"], ".checkpoint"),
    "ff_data": ".data",
    "run_experiment": ".experiment",
    **dict.fromkeys(["ENCODINGS", "SCHEDULES", "NEGATIVES", "DATASETS"], ".options"),
}

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
