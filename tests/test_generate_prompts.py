"""Drawing what to generate from the training manifest: mirroring, balancing, determinism, caption wording."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from generate_helpers import write_manifest
from orchestrator.dataset.captions import CaptionSettings
from orchestrator.common.errors import MedsynthError
from orchestrator.generate.prompts import distribution, draw, plan_items, read_manifest
from orchestrator.common.paths import DATASETS_DIR
from train_helpers import caption_for

SITES = ("torso", "lower extremity", "upper extremity", "head/neck", "palms/soles", "")
SITE_WEIGHTS = (0.45, 0.25, 0.15, 0.1, 0.02, 0.03)
TONES = ("very light", "light", "intermediate", "tan", "brown", "dark")


def _rows(n: int, seed: int = 3, skin_tone: bool = False) -> list[dict[str, str]]:
    """n manifest rows with skewed sex/site/age (and skin tone) and the default template's captions."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        sex = str(rng.choice(["male", "female", ""], p=[0.55, 0.4, 0.05]))
        site = str(rng.choice(SITES, p=SITE_WEIGHTS))
        age = str(int(rng.choice(np.arange(20, 90, 5))))
        hairy = bool(rng.random() < 0.2)
        row = {"image_id": f"ISIC_{i:07d}", "caption": caption_for(sex, site, age, hairy), "hair": str(hairy).lower(),
               "sex": sex, "age": age, "site": site, "diagnosis": "melanoma", "malignant": "true"}
        if skin_tone:
            row["skin_tone"] = str(rng.choice(TONES, p=[0.5, 0.3, 0.1, 0.06, 0.03, 0.01]))
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def big_manifest(tmp_path_factory) -> Path:
    return write_manifest(tmp_path_factory.mktemp("m") / "manifest.csv", _rows(3000, skin_tone=True))


def _items(manifest: Path, count: int, **kw):
    return plan_items(manifest, count, settings=CaptionSettings(), **{"seed": 0, "balance": None, **kw})


def test_matching_mirrors_the_joint_distribution_of_sex_site_and_age_band(big_manifest):
    fields = ["sex", "site", "age_band"]
    want = distribution(read_manifest(big_manifest), fields)
    got = distribution([i.row for i in _items(big_manifest, 20000, seed=5)], fields)
    worst = max(abs(got.get(k, 0) - share) for k, share in want.items())
    assert worst < 0.01, f"largest deviation {worst:.4f}"
    assert set(got) <= set(want)  # never a combination the training set lacks


@pytest.mark.parametrize("field, values", [("site", 5), ("sex", 2), ("age_band", 7), ("skin_tone", 6)])
def test_balancing_makes_the_field_uniform_over_its_known_values(big_manifest, field, values):
    count = values * 40 + 3
    items = _items(big_manifest, count, balance=field)
    shares = distribution([i.row for i in items], [field])
    assert len(shares) == values and ("",) not in shares  # rows with the field missing are never drawn
    counts = [round(s * count) for s in shares.values()]
    assert max(counts) - min(counts) <= 1  # each block of k items holds every value once


def test_balancing_keeps_the_other_fields_distribution_given_the_value(big_manifest):
    items = _items(big_manifest, 6000, balance="site", seed=2)
    torso_rows = [r for r in read_manifest(big_manifest).to_dict("records") if r["site"] == "torso"]
    want = distribution(torso_rows, ["sex"])
    got = distribution([i.row for i in items if i.row["site"] == "torso"], ["sex"])
    assert max(abs(got[k] - want[k]) for k in want) < 0.04


def test_same_seed_gives_the_same_prompts_and_image_seeds(big_manifest):
    first, again = _items(big_manifest, 50, seed=11), _items(big_manifest, 50, seed=11)
    assert [(i.prompt, i.seed) for i in first] == [(i.prompt, i.seed) for i in again]
    other = _items(big_manifest, 50, seed=12)
    assert [i.seed for i in other] != [i.seed for i in first]


@pytest.mark.parametrize("balance", [None, "site"])
def test_a_larger_count_extends_a_smaller_one(big_manifest, balance):
    small, large = _items(big_manifest, 20, balance=balance), _items(big_manifest, 45, balance=balance)
    assert [(i.prompt, i.seed) for i in large[:20]] == [(i.prompt, i.seed) for i in small]


def test_image_seeds_are_in_sd_scripts_range_and_distinct(big_manifest):
    seeds = [i.seed for i in _items(big_manifest, 500)]
    assert all(0 <= s < 2**31 - 1 for s in seeds) and len(set(seeds)) == len(seeds)


def test_prompts_use_the_caption_wording_without_the_hair_phrase(big_manifest):
    items = _items(big_manifest, 300)
    assert any(i.row["hair"] == "true" for i in items)
    for item in items:
        r = item.row
        assert item.prompt == caption_for(r["sex"], r["site"], r["age"], False)


def test_keep_hair_keeps_the_hair_phrase_of_hairy_rows(big_manifest):
    items = _items(big_manifest, 300, keep_hair=True)
    assert all(i.prompt.endswith(", hairy") == (i.row["hair"] == "true") for i in items)
    assert any(i.prompt.endswith(", hairy") for i in items)


def test_the_demo_dataset_manifest_gives_prompts_of_its_own_captions(tmp_path):
    """The real demo manifest (built by `medsynth dataset build`) round-trips through the template."""
    manifest = DATASETS_DIR / "melanoma" / "manifest.csv"
    if not manifest.is_file():
        pytest.skip("datasets/melanoma not built (make dataset)")
    captions = set(read_manifest(manifest)["caption"])
    items = _items(manifest, 40, seed=4)
    assert {i.prompt for i in items} <= {c.removesuffix(", hairy") for c in captions}


def test_a_caption_the_template_does_not_reproduce_is_refused_naming_the_image(tmp_path):
    rows = _rows(5)
    rows[3]["caption"] = "a lesion photo, me1anoma"
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    with pytest.raises(MedsynthError, match=r"ISIC_0000003's caption 'a lesion photo, me1anoma' .*\(caption_template\)"):
        _items(manifest, 3)


def test_a_custom_template_given_with_the_manifest_is_used(tmp_path):
    template = tmp_path / "cap.j2"
    template.write_text("dermoscopy, {{ trigger }}{% if sex %}, {{ sex }}{% endif %}")
    rows = [{"image_id": "ISIC_1", "caption": "dermoscopy, me1anoma, male", "sex": "male", "age": "40", "site": ""}]
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    items = plan_items(manifest, 2, seed=0, balance=None, settings=CaptionSettings(template=template))
    assert [i.prompt for i in items] == ["dermoscopy, me1anoma, male"] * 2


def test_a_template_naming_skin_tone_gets_each_rows_band(tmp_path):
    template = tmp_path / "cap.j2"
    template.write_text("photo of {% if skin_tone %}{{ skin_tone }} {% endif %}skin, {{ trigger }}")
    rows = [{"image_id": "ISIC_1", "caption": "photo of tan skin, me1anoma", "skin_tone": "tan"},
            {"image_id": "ISIC_2", "caption": "photo of skin, me1anoma", "skin_tone": ""}]
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    items = plan_items(manifest, 40, seed=0, balance=None, settings=CaptionSettings(template=template))
    assert {i.prompt for i in items} == {"photo of tan skin, me1anoma", "photo of skin, me1anoma"}
    assert all(i.prompt == r["caption"] for i in items for r in rows if r["image_id"] == i.row["image_id"])


def test_balancing_on_skin_tone_of_a_build_without_it_says_how_to_get_it(tmp_path):
    rows = [{**r, "skin_tone": ""} for r in _rows(10)]
    with pytest.raises(MedsynthError, match="no row of .* has a skin_tone .*--skin-tone"):
        _items(write_manifest(tmp_path / "manifest.csv", rows), 4, balance="skin_tone")


def test_a_prompt_sd_scripts_would_split_is_refused(tmp_path):
    template = tmp_path / "cap.j2"
    template.write_text("photo --of {{ trigger }}")
    manifest = write_manifest(tmp_path / "manifest.csv", [{"image_id": "ISIC_1", "caption": "photo --of me1anoma"}])
    with pytest.raises(MedsynthError, match="contains '--'"):
        plan_items(manifest, 1, seed=0, balance=None, settings=CaptionSettings(template=template))


def test_balancing_on_a_column_the_manifest_lacks_says_so(tmp_path):
    manifest = write_manifest(tmp_path / "manifest.csv", _rows(10))
    with pytest.raises(MedsynthError, match="no 'skin_tone' column.*--skin-tone"):
        _items(manifest, 4, balance="skin_tone")


def test_skipped_rows_are_never_drawn(tmp_path):
    rows = _rows(6)
    for row in rows[1:]:
        row["status"] = "skipped"
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    assert {i.row["image_id"] for i in _items(manifest, 30)} == {"ISIC_0000000"}


def test_a_manifest_without_usable_rows_is_an_error(tmp_path):
    manifest = write_manifest(tmp_path / "manifest.csv", [{"image_id": "ISIC_1", "status": "skipped", "caption": ""}])
    with pytest.raises(MedsynthError, match="no image with status 'ok'"):
        read_manifest(manifest)


def test_draw_of_zero_images_is_refused(big_manifest):
    with pytest.raises(MedsynthError, match="at least 1"):
        draw(read_manifest(big_manifest), 0, seed=0)


def test_balanced_draw_of_one_value_per_block_uses_every_value(big_manifest):
    table = read_manifest(big_manifest)
    picks = draw(table, 5, seed=9, balance="site")
    assert Counter(table["site"].iloc[[r for r, _ in picks]]) == Counter(s for s in SITES if s)
