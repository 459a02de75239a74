"""NVlabs EDM and EDM2 snapshots: read without running their code, loaded into the project's own networks, which
reproduce EDM's reference outputs and have the published checkpoints' exact keys and shapes."""

import json
import os
import pickle
import sys
import types

import pytest
import torch
from safetensors.torch import load_file

from dmdlib.denoisers import trainable_copy
from dmdlib.denoisers.edm import EDMDenoiser, build_network
from dmdlib.errors import TeacherError
from dmdlib.teachers.loading import convert_edm_snapshot, load_edm
from dmdlib.teachers.snapshots import read_snapshot

VARIANTS = [
    "edm/songunet-ddpmpp-vp-cond",
    "edm/songunet-ncsnpp-ve-uncond",
    "edm/dhariwalunet-adm-edm-cond",
    "edm2/edm2-latent-tiny",
    "edm2/edm2-pixel-tiny",
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_snapshots_match_edm(variant, nvlabs_fixtures, tmp_path):
    """Each snapshot loads through the teacher loader and gives edms reference output."""
    folder = nvlabs_fixtures / variant
    kind = variant.split("/")[0]
    convert_edm_snapshot(folder / "network-snapshot.pkl", kind, tmp_path / "w.safetensors", tmp_path / "c.json")
    denoiser = load_edm(tmp_path / "w.safetensors", tmp_path / "c.json").eval()
    recorded = json.loads((folder / "config.json").read_text())["class_name"].split(".")[-1]
    assert json.loads((tmp_path / "c.json").read_text())["class_name"] == recorded
    weights, stored = load_file(folder / "weights.safetensors"), denoiser.network.state_dict()
    assert set(weights) == set(stored) and all(torch.equal(weights[k].float(), stored[k]) for k in weights)
    assert all(t.dtype == torch.float32 for t in stored.values())  # EDM2's float16 weights upcast on load

    reference = load_file(folder / "reference.safetensors")
    one_hot = reference.get("class_labels")
    with torch.no_grad():
        direct = denoiser.network(reference["x"], reference["sigma"], one_hot)
        labels = one_hot.argmax(dim=1) if one_hot is not None else None
        through_interface = denoiser(reference["x"], reference["sigma"], labels)
    assert (direct - reference["expected"]).abs().max() < 1e-5
    assert torch.equal(direct, through_interface)
    assert denoiser.sample_shape == tuple(reference["x"].shape[1:])
    assert denoiser.num_classes == (one_hot.shape[1] if one_hot is not None else 0)


@pytest.mark.parametrize("family", ["edm", "edm2"])
def test_published_configurations(family, nvlabs_fixtures):
    """Networks at the published configurations have the checkpoints keys and shapes."""
    published = json.loads((nvlabs_fixtures / family / "full-size-keys.json").read_text())
    for name, entry in published.items():
        config = dict(entry["config"])
        kwargs = dict(img_resolution=config.pop("res"), img_channels=config.pop("ch"), label_dim=config.pop("labels"))
        class_name = config.pop("cls", "Precond")
        config.pop("latent", None)
        with torch.device("meta"):
            network = build_network(class_name, {**kwargs, **config})
        shapes = {key: list(tensor.shape) for key, tensor in network.state_dict().items()}
        assert shapes == entry["keys"] and list(shapes) == list(entry["keys"]), name
        assert sum(p.numel() for p in network.parameters()) == entry["params"], name


def test_the_preconditionings_noise_ranges_and_weightings():
    tiny = dict(img_resolution=8, img_channels=3, model_channels=8, channel_mult=[1], num_blocks=1, attn_resolutions=[])
    vp, ve = build_network("VPPrecond", tiny), build_network("VEPrecond", tiny)
    iddpm = build_network("iDDPMPrecond", {**tiny, "model_type": "SongUNet"})
    edm = build_network("EDMPrecond", {**tiny, "model_type": "SongUNet"})
    assert vp.sigma_max == pytest.approx(152.17, abs=0.01) and vp.sigma_min == pytest.approx(0.001, rel=1e-3)
    assert (ve.sigma_min, ve.sigma_max) == (0.02, 100.0)
    assert iddpm.u.shape == (1001,) and iddpm.u[-1] == 0 and torch.all(iddpm.u[:-1] > iddpm.u[1:])
    # EDM's sampler range, clamped to the network's: VP and EDM run 0.002..80, VE from its own 0.02
    assert (EDMDenoiser(vp).sigma_min, EDMDenoiser(vp).sigma_max) == (0.002, 80.0)
    assert (EDMDenoiser(ve).sigma_min, EDMDenoiser(edm).sigma_max) == (0.02, 80.0)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    assert torch.allclose(EDMDenoiser(vp).loss_weight(sigma), sigma**-2)  # EDM Table 1: VP and VE lambda = 1/sigma^2
    assert torch.allclose(EDMDenoiser(edm).loss_weight(sigma), (sigma**2 + 0.25) / (0.5 * sigma) ** 2)
    x = torch.randn(2, 3, 8, 8)
    for network in (vp, ve, iddpm, edm):  # D(x, sigma) -> x as sigma -> 0 for every preconditioning
        assert torch.allclose(network.eval()(x, torch.full((2,), 1e-4)), x, atol=1e-2)
    generator = trainable_copy(EDMDenoiser(build_network("VPPrecond", {**tiny, "dropout": 0.5})))
    assert generator.training and torch.equal(generator(x, 1.0), generator(x, 1.0))  # dropout off, as DMD trains


class _Payload:
    """Pickles as a call of `function` on `argument`: what a malicious snapshot carries."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def test_a_malicious_snapshot_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    target = tmp_path / "created-by-the-snapshot"
    payload = tmp_path / "reduce.pkl"
    payload.write_bytes(pickle.dumps({"ema": _Payload(os.system, f"touch {target}")}))
    with pytest.raises(TeacherError, match=rf"{payload}: refers to (posix|nt)\.system.*refused without running it"):
        read_snapshot(payload)

    # A persistence record whose embedded source would create the file if it were executed (EDM's own loader runs it).
    source = tmp_path / "source.pkl"
    kwargs = dict(img_resolution=8, img_channels=3, model_channels=8, channel_mult=[1], num_blocks=1)
    meta = {
        "type": "class",
        "version": 6,
        "class_name": "VPPrecond",
        "state": {"_init_kwargs": kwargs},
        "module_src": f"open({str(target)!r}, 'w').write('ran')",
    }
    source.write_bytes(pickle.dumps({"ema": _Payload(_persistence_reconstructor(monkeypatch), meta)}))
    with pytest.raises(
        TeacherError, match=rf"{source}: weights do not fit the network its config describes: \d+ missing"
    ):
        convert_edm_snapshot(source, "edm", tmp_path / "w.safetensors", tmp_path / "c.json")
    meta["state"]["_init_kwargs"] = {"img_resolution": 8}
    source.write_bytes(pickle.dumps({"ema": _Payload(_persistence_reconstructor(monkeypatch), meta)}))
    with pytest.raises(TeacherError, match=rf"{source}: the VPPrecond record's constructor arguments do not build"):
        convert_edm_snapshot(source, "edm", tmp_path / "w.safetensors", tmp_path / "c.json")
    exec_payload = tmp_path / "exec.pkl"
    exec_payload.write_bytes(pickle.dumps({"ema": _Payload(exec, f"open({str(target)!r}, 'w')")}))
    with pytest.raises(TeacherError, match=r"builtins\.exec"):
        read_snapshot(exec_payload)
    assert not target.exists()
    assert not (tmp_path / "w.safetensors").exists()


def _persistence_reconstructor(monkeypatch):
    """A function that pickles as EDM's `torch_utils.persistence._reconstruct_persistent_obj`, as snapshots refer to
    it."""
    module = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called: the reader resolves the name to its own record type
        raise AssertionError

    _reconstruct_persistent_obj.__module__ = module.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", module)
    return _reconstruct_persistent_obj


def test_wrong_snapshot_named(nvlabs_fixtures, tmp_path):
    """A snapshot of the other family or a latent one without vae is named."""
    with pytest.raises(
        TeacherError, match="holds a Precond network; teacher.kind 'edm' expects.*set teacher.kind: edm2"
    ):
        convert_edm_snapshot(
            nvlabs_fixtures / "edm2/edm2-pixel-tiny/network-snapshot.pkl", "edm", tmp_path / "w", tmp_path / "c"
        )
    with pytest.raises(TeacherError, match="not found; download the .pkl beforehand"):
        read_snapshot(tmp_path / "missing.pkl")
    encoder = convert_edm_snapshot(
        nvlabs_fixtures / "edm2/edm2-latent-tiny/network-snapshot.pkl",
        "edm2",
        tmp_path / "w.safetensors",
        tmp_path / "c.json",
    )
    reference = load_file(nvlabs_fixtures / "edm2/edm2-latent-tiny/reference.safetensors")
    assert encoder["class_name"] == "StabilityVAEEncoder" and encoder["vae_name"] == "stabilityai/sd-vae-ft-mse"
    assert torch.allclose(torch.tensor(encoder["scale"]), reference["encoder_scale"].flatten())
    assert torch.allclose(torch.tensor(encoder["bias"]), reference["encoder_bias"].flatten())


def _record(module: torch.nn.Module, init_kwargs: dict | None, reconstruct):
    """`module` as EDM's persistence pickles it: a record (class name, state = the module's __dict__ with its
    parameters, buffers and children), children likewise; torch containers as themselves."""
    from collections import OrderedDict

    children = OrderedDict(
        (name, None if child is None else _record(child, None, reconstruct)) for name, child in module._modules.items()
    )
    state = {
        "_parameters": OrderedDict(module._parameters),
        "_buffers": OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(module._non_persistent_buffers_set),
        "_modules": children,
        "training": False,
        "_init_args": (),
        "_init_kwargs": init_kwargs or {},
    }
    if isinstance(module, torch.nn.ModuleDict):
        container = torch.nn.ModuleDict()
        container.__dict__.update(state)
        return container
    meta = {
        "type": "class",
        "version": 6,
        "module_src": "raise RuntimeError('never run')",
        "class_name": type(module).__name__,
        "state": state,
    }
    return _Payload(reconstruct, meta)


@pytest.mark.parametrize(
    "class_name, kwargs",
    [
        ("VPPrecond", dict(model_type="SongUNet", embedding_type="positional", augment_dim=9, label_dim=10)),
        (
            "VEPrecond",
            dict(
                model_type="SongUNet",
                embedding_type="fourier",
                encoder_type="residual",
                channel_mult_noise=2,
                resample_filter=[1, 3, 3, 1],
            ),
        ),
        ("EDMPrecond", dict(model_type="DhariwalUNet", label_dim=10)),
        ("Precond", dict(label_dim=10)),
    ],
)
def test_own_network_snapshot_round_trip(class_name, kwargs, tmp_path, monkeypatch):
    """Without NVlabs' fixtures (as in CI): a snapshot written in EDM's persistence format (records, storages
    pickled through torch.storage._load_from_bytes) converts and loads to the same outputs."""
    torch.manual_seed(0)
    init_kwargs = dict(
        img_resolution=16,
        img_channels=3,
        model_channels=16,
        channel_mult=[1, 2],
        num_blocks=1,
        attn_resolutions=[8],
        **kwargs,
    )
    network = build_network(class_name, init_kwargs).eval()
    snapshot = tmp_path / "network-snapshot.pkl"
    snapshot.write_bytes(
        pickle.dumps({"ema": _record(network, init_kwargs, _persistence_reconstructor(monkeypatch)), "loss_fn": None})
    )
    assert b"torch.storage" in snapshot.read_bytes() and b"_load_from_bytes" in snapshot.read_bytes()
    family = "edm2" if class_name == "Precond" else "edm"
    convert_edm_snapshot(snapshot, family, tmp_path / "w.safetensors", tmp_path / "c.json")
    loaded = load_edm(tmp_path / "w.safetensors", tmp_path / "c.json").eval()
    x, sigma = torch.randn(3, 3, 16, 16), torch.tensor([0.01, 1.0, 80.0])
    labels = torch.eye(10)[[0, 3, 9]] if kwargs.get("label_dim") else None
    with torch.no_grad():
        assert torch.equal(loaded.network(x, sigma, labels), network(x, sigma, labels))
