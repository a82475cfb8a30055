"""Clinical-area normalisation (spec: "Clinical areas")."""

from __future__ import annotations

import pyarrow as pa
import pytest

from tests.spec_areas import CANONICAL_AREAS as SPEC_AREAS
from tripflow.records.areas import CANONICAL_AREAS, normalise_area_column, normalise_areas

# The tests' one restatement of the spec's list: the 27 names seen in the log, then the 5
# the spec adds.
SPEC_27, SPEC_ADDED = SPEC_AREAS[:27], SPEC_AREAS[27:]


def test_canonical_list_is_the_spec_27_plus_the_5_it_adds() -> None:
    assert sorted(CANONICAL_AREAS) == sorted(SPEC_27 + SPEC_ADDED)
    assert len(set(CANONICAL_AREAS)) == 32


@pytest.mark.parametrize("name", SPEC_27 + SPEC_ADDED)
def test_every_canonical_name_maps_to_itself(name: str) -> None:
    assert normalise_areas(name) == ([name], [])
    assert normalise_areas(name.lower()) == ([name], [])
    assert normalise_areas(name.upper().replace(" ", "_")) == ([name], [])


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("neurology", "Neurology"),
        ("obgyn", "OB-Gyn"),
        ("OB-Gyn", "OB-Gyn"),
        ("emergencymedicine", "Emergency Medicine"),
        ("infectiousdisease", "Infectious Disease"),
        ("physicalmedicine", "Physical Medicine"),
        ("sports_medicine", "Sports Medicine"),
        ("preventive_medicine", "Preventive Medicine"),
        ("public_health", "Public Health"),
        ("epidemiology", "Epidemiology"),
        ("hospice", "Hospice"),
        ("Otolaryngology-ENT", "Otolaryngology-ENT"),
        ("otolaryngologyent", "Otolaryngology-ENT"),
        ("women's health", "Women's Health"),
        ("womenshealth", "Women's Health"),
        ("  Critical Care  ", "Critical Care"),
    ],
)
def test_spec_spellings_map_to_canonical(raw: str, canonical: str) -> None:
    assert normalise_areas(raw) == ([canonical], [])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Pediatrics,neurology,Neurology", (["Neurology", "Pediatrics"], [])),
        (",Oncology,Surgery", (["Oncology", "Surgery"], [])),
        ("Surgery,Oncology", (["Oncology", "Surgery"], [])),
        ("", ([], [])),
        (None, ([], [])),
        (" , ,,", ([], [])),
        # spec: an unknown name is kept in the set, title-cased, and listed as unmapped
        (",tropical_medicine,Oncology", (["Oncology", "Tropical Medicine"],
                                         ["Tropical Medicine"])),
        ("TROPICAL MEDICINE,tropical_medicine", (["Tropical Medicine"], ["Tropical Medicine"])),
        ("children's health", (["Children's Health"], ["Children's Health"])),
        ("Space Medicine,space_medicine,Surgery", (["Space Medicine", "Surgery"],
                                                   ["Space Medicine"])),
    ],
)
def test_lists_are_sorted_sets(
    raw: str | None, expected: tuple[list[str], list[str]]
) -> None:
    assert normalise_areas(raw) == expected


def test_results_are_fresh_lists() -> None:
    canonical, _unmapped = normalise_areas(",Oncology,Surgery")
    canonical.append("tampered")
    assert normalise_areas(",Oncology,Surgery") == (["Oncology", "Surgery"], [])


def test_column_form_matches_single_form_row_by_row() -> None:
    raw = [",Oncology,Surgery", None, "", "obgyn,tropical_medicine", ",Oncology,Surgery"]
    canonical, unmapped = normalise_area_column(pa.array(raw, pa.string()))
    assert canonical.to_pylist() == [
        ["Oncology", "Surgery"], None, [], ["OB-Gyn", "Tropical Medicine"],
        ["Oncology", "Surgery"]
    ]
    assert unmapped.to_pylist() == [[], None, [], ["Tropical Medicine"], []]
