"""benchmarks.synthetic: the papers' data models have the statistics they claim, and the harness runs."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks import synthetic as S

GEOMETRY = S.PatchGeometry(grid=4, side=2, channels=4)  # 16 patches of 16 dimensions


@pytest.fixture(autouse=True)
def one_thread():
    """As ``main`` does: on tiny tensors, intra-op threads on busy shared cores cost 50x per step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rarity_model(**overrides) -> S.FeatureNoiseModel:
    settings = dict(
        num_classes=3,
        frequencies=(0.7, 0.2, 0.1),
        tiers=("common", "rare", "extremely rare"),
        geometry=GEOMETRY,
        feature_patches=2,
        noise=0.05,
        dominant_noise=0.5,
        feature_noise=0.3,
        feature_noise_patches=1,
    )
    return S.FeatureNoiseModel(**{**settings, **overrides})


def binomial_ok(count: int, n: int, p: float) -> bool:
    """``count`` of ``n`` lies within 4.5 standard deviations of ``n p`` (fails ~1e-5 of the time)."""
    return abs(count - n * p) <= 4.5 * math.sqrt(n * p * (1 - p))


def test_patches_map_onto_square_pixel_blocks():
    patches = torch.randn(3, GEOMETRY.patches, GEOMETRY.dim)
    images = S.to_images(patches, GEOMETRY)
    assert images.shape == (3, 4, 8, 8)
    assert torch.equal(S.to_patches(images, GEOMETRY), patches)
    marked = torch.zeros(1, GEOMETRY.patches, GEOMETRY.dim)
    marked[0, 6] = 1.0  # row 1, column 2 of the grid
    nonzero = S.to_images(marked, GEOMETRY)[0].abs().sum(0).nonzero()
    assert {tuple(p) for p in nonzero.tolist()} == {(y, x) for y in (2, 3) for x in (4, 5)}


def test_feature_noise_tiers_follow_their_frequencies():
    model = rarity_model()
    data = model.sample(6000, 1, features=model.features(0))
    for t, p in enumerate(model.frequencies):
        assert binomial_ok(int((data.tier == t).sum()), len(data), p)
    for k in range(model.num_classes):
        assert binomial_ok(int((data.y == k).sum()), len(data), 1 / model.num_classes)


def test_feature_noise_patches_hold_the_feature_the_noise_and_faint_features():
    model = rarity_model()
    features = model.features(0)
    flat = features.view(-1, GEOMETRY.dim)
    assert torch.allclose(flat @ flat.T, torch.eye(flat.shape[0]), atol=1e-5)
    data = model.sample(500, 2, features=features)
    patches = S.to_patches(data.x, GEOMETRY)
    own = torch.einsum("npd,nd->np", patches, features[data.y, data.tier])
    # Exactly feature_patches patches carry the sample's own feature at full norm; noise adds nothing.
    assert torch.equal((own - 1.0).abs().lt(1e-4).sum(1), torch.full((500,), model.feature_patches))
    # Off the feature directions, one patch holds the strong noise, the rest weak noise.
    residual = patches - (patches @ flat.T) @ flat
    norms = residual.norm(dim=2).sort(dim=1, descending=True).values
    dim_left = GEOMETRY.dim - flat.shape[0]
    assert norms[:, 0].mean() == pytest.approx(model.dominant_noise * math.sqrt(dim_left), rel=0.15)
    assert norms[:, 1:].mean() == pytest.approx(model.noise * math.sqrt(dim_left), rel=0.15)
    # One patch per sample carries another class's feature at the feature-noise scale.
    coefficients = patches @ flat.T  # (n, P, K * tiers)
    faint = (coefficients - model.feature_noise).abs().lt(1e-4)
    assert torch.equal(faint.sum((1, 2)), torch.ones(500, dtype=torch.long))
    owners = faint.any(1).float().argmax(1) // len(model.tiers)
    assert not (owners == data.y).any()


def test_only_tier_and_seeds():
    model = rarity_model()
    features = model.features(0)
    rare = model.sample(50, 3, features=features, only_tier=2)
    assert torch.equal(rare.tier, torch.full((50,), 2))
    again = model.sample(50, 3, features=features, only_tier=2)
    assert torch.equal(rare.x, again.x) and torch.equal(rare.y, again.y)
    assert not torch.equal(rare.x, model.sample(50, 4, features=features, only_tier=2).x)


def test_feature_noise_model_rejects_bad_settings():
    with pytest.raises(ValueError, match="frequencies must sum to 1"):
        rarity_model(frequencies=(0.5, 0.2, 0.1))
    with pytest.raises(ValueError, match="frequencies and tiers"):
        rarity_model(frequencies=(0.5, 0.5))
    with pytest.raises(ValueError, match="do not fit"):
        rarity_model(feature_patches=15)


def test_multi_view_views_sit_in_their_halves_and_single_views_are_rare():
    model = S.MultiViewModel(num_classes=3, geometry=GEOMETRY, single_view=0.2)
    features = model.features(0)
    data = model.sample(3000, 1, features=features)
    assert binomial_ok(int((data.tier == 1).sum()), len(data), 0.2)
    patches = S.to_patches(data.x, GEOMETRY)
    half = GEOMETRY.patches // 2
    view = torch.einsum("npd,nvd->npv", patches, features[data.y])  # (n, P, 2)
    present = view.abs() > 0.5 * model.weak_view * model.view_weight[0]
    assert not present[:, half:, 0].any() and not present[:, :half, 1].any()
    # Multi-view samples show both views at full weight; single-view ones have one of them weak.
    strength = view.amax(dim=1)  # (n, 2)
    full = strength >= model.view_weight[0] - 1e-4
    assert full[data.tier == 0].all()
    assert torch.equal(full[data.tier == 1].sum(1), torch.ones(int((data.tier == 1).sum()), dtype=torch.long))


def test_min_variance_data_statistics():
    data = S.min_variance_data(4000, 0, dim=10, gamma=0.1)
    x, sign = data.x.flatten(1), (2 * data.y - 1).float().unsqueeze(1)
    assert data.x.shape == (4000, 1, 1, 10)
    assert binomial_ok(int(data.y.sum()), 4000, 0.5)
    assert torch.allclose(x[:, :5], 0.1 * sign)  # zero variance given the label
    high = x[:, 5:] * sign
    assert high.min() >= 1.0 and high.max() <= 2.0
    assert high.var(0).min() > 0.05  # Var U(1, 2) = 1/12
    with pytest.raises(ValueError, match="dim"):
        S.min_variance_data(10, 0, dim=7)


def test_spurious_digits_mark_the_class_in_training_images_only():
    train, test = S.spurious_digits(0, classes=10, gamma=0.1)
    assert train.x.shape[1:] == test.x.shape[1:] == (1, 8, 8)
    assert len(train) + len(test) == 1797 and set(train.y.tolist()) == set(range(10))
    spurious = train.x.flatten(1)[:, :10]
    # Zero variance given the class, and the class is the pixel that is +γ.
    assert torch.allclose(spurious, 0.1 * (2 * torch.nn.functional.one_hot(train.y, 10) - 1))
    assert torch.equal(spurious.argmax(dim=1), train.y)
    # The test images keep their own pixels there: no class read off them.
    clean = test.x.flatten(1)[:, :10]
    assert not torch.allclose(clean.abs(), torch.full_like(clean, 0.1))
    assert (clean.argmax(dim=1) == test.y).float().mean() < 0.5
    # The rest of each training image is the standardised digit, untouched; splits differ by seed.
    assert abs(train.x.flatten(1)[:, 10:].mean().item()) < 0.2
    assert not torch.equal(S.spurious_digits(1)[1].y, test.y)
    with pytest.raises(ValueError, match="classes"):
        S.spurious_digits(0, classes=11)


def test_patch_cutout_zeroes_whole_patches():
    images = torch.rand(8, 4, 8, 8) + 1.0
    targets = torch.randint(0, 3, (8,))
    out, soft = S.PatchCutout(GEOMETRY, 5, num_classes=3, seed=0)(images, targets)
    zeroed = S.to_patches(out, GEOMETRY).abs().sum(2).eq(0)
    assert torch.equal(zeroed.sum(1), torch.full((8,), 5))
    assert torch.equal(soft.argmax(1), targets) and torch.equal(soft.sum(1), torch.ones(8))


def test_patch_cutmix_mixes_labels_by_the_share_of_patches_swapped():
    images = torch.arange(16.0).view(16, 1, 1, 1).expand(16, 4, 8, 8).contiguous()
    targets = torch.arange(16) % 4
    out, soft = S.PatchCutMix(GEOMETRY, num_classes=4, seed=0)(images, targets)
    own = S.to_patches(out, GEOMETRY)[:, :, 0].eq(torch.arange(16.0).unsqueeze(1)).float().mean(1)
    assert torch.allclose(soft.sum(1), torch.ones(16))
    # A sample keeps its own label weight in proportion to its own patches (its partner may share
    # its class, so compare where the classes differ).
    partner_class = soft.clone()
    partner_class[torch.arange(16), targets] = 0
    differs = partner_class.sum(1) > 0
    assert torch.allclose(soft[torch.arange(16), targets][differs], own[differs])


def test_activations_are_continuous_at_their_joints():
    for function, joints in ((S.smoothed_leaky_relu, (0.0, 1.0)), (S.smoothed_relu, (0.0, 0.5))):
        for joint in joints:
            z = torch.tensor([joint - 1e-4, joint + 1e-4])
            left, right = function(z)
            assert abs(left - right) < 1e-3


def test_verdicts_follow_the_interval():
    claim = S.Claim("x", "a", "b", "m")
    assert S.verdict(claim, 0.5, 2.0) == "holds"
    assert S.verdict(claim, -2.0, -0.5) == "opposite"
    assert S.verdict(claim, -0.5, 2.0) == "not resolved"
    lower = S.Claim("x", "a", "b", "m", sign=-1)
    assert S.verdict(lower, -2.0, -0.5) == "holds"
    as_well = S.Claim("x", "a", "b", "m", margin=-2.0)
    assert S.verdict(as_well, -1.0, 1.0) == "holds"
    mean, low, high = S.paired_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(2.0 - 4.303 / math.sqrt(3)) and high > 3.0


def tiny_experiment() -> S.Experiment:
    """The rarity experiment in miniature, with the paper's patch operators: seconds, not minutes."""
    model = rarity_model(num_classes=2)
    methods = (
        S.Method("ERM"),
        S.Method("Cutout (patches)", lambda seed: S.PatchCutout(GEOMETRY, 4, num_classes=2, seed=seed)),
        S.Method("CutMix (patches)", lambda seed: S.PatchCutMix(GEOMETRY, num_classes=2, seed=seed)),
    )

    def run(method: S.Method, seed: int, quick: bool) -> dict[str, float]:
        features = model.features(seed)
        train_set = model.sample(60, 100 + seed, features=features)
        torch.manual_seed(seed)
        net = S.PatchCNN(GEOMETRY, 2, width=1, activation=S.smoothed_leaky_relu, init_std=0.01)
        loss = S.train(net, train_set, method, seed=seed, epochs=5, batch=20, lr=0.5, num_classes=2)
        out = {"train loss": loss}
        for t, tier in enumerate(model.tiers):
            out[tier] = S.accuracy(net, model.sample(50, 200 + seed, features=features, only_tier=t))
        return out

    claims = (
        S.Claim("ERM misses rare features", "ERM", "ERM", "rare - common", sign=-1),
        S.Claim("CutMix beats ERM on extremely rare", "CutMix (patches)", "ERM", "extremely rare"),
    )
    return S.Experiment("tiny", "tiny", "setup", methods, (*model.tiers, "train loss"), claims, run)


def test_harness_runs_and_reports_every_claim(tmp_path):
    runs = S.run_all([tiny_experiment()], seeds=2, quick=True, log=lambda _: None)
    experiment, results = runs["tiny"]
    assert set(results) == {(m.name, s) for m in experiment.methods for s in (0, 1)}
    for result in results.values():
        assert all(0.0 <= result[tier] <= 100.0 for tier in ("common", "rare", "extremely rare"))
        assert math.isfinite(result["train loss"])
    # Paired by seed: the same seed gives the same run.
    again = S.run_all([tiny_experiment()], seeds=1, quick=True, log=lambda _: None)["tiny"][1]
    assert again[("ERM", 0)] == results[("ERM", 0)]
    text = S.render(runs, {"command": "c", "date": "d", "machine": "m", "seeds": 2, "runtime": 1.0}, None)
    for claim in experiment.claims:
        assert claim.text in text
    verdicts = sum(text.count(f"**{v}**") for v in ("holds", "opposite", "not resolved"))
    assert verdicts == len(experiment.claims)
    plot = S.write_plot(runs, tmp_path / "synthetic.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_experiment_builds_with_dalaug_operators():
    """The registered experiments construct (importing dalaug.ops) and their claims name real methods."""
    for build in S.EXPERIMENTS.values():
        experiment = build()
        names = {m.name for m in experiment.methods}
        for claim in experiment.claims:
            assert {claim.method, claim.baseline} <= names
            assert set(claim.metric.split(" - ")) <= set(experiment.metrics)
