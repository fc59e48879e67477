"""The torch-free catalog (sjconv.catalog) is the one source of the names the tools offer; the
torch-side tables are built from it. These tests check that both sides agree, record by record."""

import dataclasses

import pytest

from sjconv import catalog
from sjconv.data import CIFAR, DATASETS
from sjconv.errors import ConfigError
from sjconv.finetune import LOSSES, OPTIMIZERS
from sjconv.models import ARCHS
from sjconv.neurons import BACKEND_TABLE, BACKENDS, GROUP_NODE_CLASSES, METHODS, NODE_CLASSES, rules
from sjconv.catalog import PRERUNS, PreRunKind


def _spec_fields(record, spec_class):
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(spec_class)}


def test_methods_agree_with_the_catalog():
    assert list(METHODS) == list(catalog.METHODS)
    for name, record in METHODS.items():
        spec = catalog.METHODS[name]
        assert isinstance(record, catalog.MethodSpec)
        assert _spec_fields(record, catalog.MethodSpec) == _spec_fields(spec, catalog.MethodSpec)
        assert (record.label, record.signed, record.prerun, record.default_tau) == \
            (spec.label, spec.signed, spec.prerun, spec.default_tau)
        # the node class has the kind the catalog names
        assert record.node.SIGNED == spec.signed
        assert record.node.PRERUN == (spec.prerun.name if spec.prerun else None)
        assert record.row_label(4, "snm") == spec.row_label(4, "snm")
        assert record.row_label(4, "snm", 8) == spec.row_label(4, "snm", 8)
        assert (record.node in GROUP_NODE_CLASSES.values()) == spec.group
    # every node kind is some method's
    assert {(r.node.SIGNED, r.node.PRERUN) for r in METHODS.values() if not r.group} == set(NODE_CLASSES)
    assert {r.node for r in METHODS.values() if r.group} == set(GROUP_NODE_CLASSES.values())


def test_preruns_and_rules_are_the_catalog_s():
    assert PRERUNS is catalog.PRERUNS and PreRunKind is catalog.PreRunKind
    assert {kind.name for kind in PRERUNS.values()} == set(PRERUNS)
    assert [(k.symbol, k.default_steps, k.one_call) for k in PRERUNS.values()] == [("τ", 4, False), ("ρ", 4, True)]
    assert rules.NEG_RULES is catalog.NEG_RULES == ("qcfs", "snm")


def test_backends_agree_with_the_catalog():
    assert BACKENDS == catalog.BACKENDS == tuple(BACKEND_TABLE) == tuple(catalog.BACKEND_TABLE)
    for name, record in BACKEND_TABLE.items():
        spec = catalog.BACKEND_TABLE[name]
        assert _spec_fields(record, catalog.BackendSpec) == _spec_fields(spec, catalog.BackendSpec)
        assert callable(record.check) and callable(record.run)


def test_archs_datasets_losses_agree_with_the_catalog():
    from sjconv.models import _BUILDERS

    assert tuple(ARCHS) == catalog.ARCHS and set(_BUILDERS) == set(catalog.ARCHS)
    assert all(ARCHS[name].__name__ == name for name in ARCHS)
    assert DATASETS == catalog.DATASETS == ("cifar10", "cifar100", "imagenet") and CIFAR is catalog.CIFAR
    assert (LOSSES, OPTIMIZERS) == (catalog.LOSSES, catalog.OPTIMIZERS)


def test_catalog_checks_name_the_choices():
    with pytest.raises(ConfigError, match="unknown method 'nope'; choose one of qcfs, neg, srp"):
        catalog.method_spec("nope")
    with pytest.raises(ConfigError, match=r"needs a signed method \(neg, srp\+neg, cos\+neg or gn\+neg\)"):
        catalog.check_method("qcfs", None, "snm")
    with pytest.raises(ConfigError, match="only meaningful for methods with a pre-run"):
        catalog.check_method("neg", 2)
    assert catalog.check_method("cos+neg", None, "snm") == (catalog.METHODS["cos+neg"], 4)


def test_levels_are_checked_with_their_method():
    assert catalog.check_levels(None) is None and catalog.check_levels(4, "gn+neg") == 4
    with pytest.raises(ConfigError, match=r"only meaningful for group methods \(gn or gn\+neg\)"):
        catalog.check_levels(4, "cos")
    for bad in (0, -1, 2.5, 2.0, True, "4"):
        with pytest.raises(ConfigError, match="whole number >= 1"):
            catalog.check_levels(bad)


def test_cupy_refuses_a_float64_network_when_it_is_built(monkeypatch):
    """The fused kernel runs float32, float16 and bfloat16: a float64 ANN is refused by ``convert``
    (before any run), naming the dtype and the fix; the torch backend takes it."""
    import sjconv
    from sjconv.errors import ConfigError

    spec = catalog.BACKEND_TABLE["cupy"]
    spec.check_dtype("bfloat16", "an ANN")
    with pytest.raises(ConfigError, match="runs float32, float16, bfloat16, not an ANN of dtype float64"):
        spec.check_dtype("float64", "an ANN")
    catalog.BACKEND_TABLE["torch"].check_dtype("float64", "an ANN")
    ann = sjconv.models.small_cnn(num_classes=3, in_channels=1, image_size=8).double()
    import sjconv.neurons  # noqa: F401 - attaches the backends' code to the catalog records
    monkeypatch.setitem(catalog._ATTACHED, ("check", "cupy"), lambda: None)   # as if CuPy and a GPU were here
    with pytest.raises(ConfigError, match="backend='torch'"):
        sjconv.convert(ann, method="qcfs", backend="cupy")
    assert sjconv.convert(ann, method="qcfs").net is not None
