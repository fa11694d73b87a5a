"""The code tables behind domain/categories.py: which ICD-10, LOINC, SNOMED CT and ATC codes and
which label words fall in each sensitive category, and the memoised matcher of one coding.

A mask has one bit per sensitive category, in the order of ``SENSITIVE`` in domain/categories.py.
Tables are built at import; pure, no IO.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

_HIV, _PSY, _REP, _GEN = 1, 2, 4, 8  # bits in SENSITIVE order


# --- ICD-10 (WHO, CM and the Chinese national clinical version) -------------------------------


def _span(first: str, last: str) -> list[str]:
    return [f"{first[0]}{n:02d}" for n in range(int(first[1:]), int(last[1:]) + 1)]


# Three-character categories. O9A and Z3A are ICD-10-CM's letter-ended categories.
_ICD10: dict[str, int] = {}
for _bit, _keys in (
    (_HIV, [*_span("B20", "B24"), "Z21", "R75"]),  # HIV disease, status, inconclusive test
    # Mental and behavioural disorders; intentional self-harm (an addition: X60-X84).
    (_PSY, [*_span("F00", "F99"), *_span("X60", "X84")]),
    # Pregnancy and childbirth; contraception, procreation, pregnancy supervision and delivery;
    # female infertility, habitual aborter, artificial fertilisation; male infertility (N46).
    (_REP, [*_span("O00", "O99"), "O9A", *_span("Z30", "Z39"), "Z3A", *_span("N96", "N98"), "N46"]),
    (_GEN, [*_span("Q90", "Q99"), "Z14", "Z15"]),  # chromosomal; carrier; susceptibility
):
    for _key in _keys:
        _ICD10[_key] = _ICD10.get(_key, 0) | _bit

# Subcategories, matched as prefixes of the code without its dot.
_ICD10_SUB: dict[str, list[tuple[str, int]]] = {}
for _code, _bit in (
    ("Z11.4", _HIV),  # screening for HIV
    ("Z20.6", _HIV),  # contact with or exposure to HIV
    ("Z71.7", _HIV),  # HIV counselling
    ("O98.7", _HIV),  # HIV disease complicating pregnancy
    ("F02.4", _HIV),  # dementia in HIV disease (WHO)
    ("Z84.81", _GEN),  # family history of carrier of genetic disease (CM)
    ("Z82.7", _GEN),  # family history of chromosomal abnormalities
    ("Z13.7", _GEN),  # screening for chromosomal or genetic anomalies
    ("O28.5", _GEN),  # chromosomal or genetic finding on antenatal screening
    ("O35.1", _GEN),  # maternal care for chromosomal abnormality in fetus
    ("O35.2", _GEN),  # maternal care for hereditary disease in fetus
):
    _ICD10_SUB.setdefault(_code[:3], []).append((_code.replace(".", ""), _bit))

_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGITS = frozenset("0123456789")


def _icd10_mask(code: str) -> int:
    """F32.9, F329, f32.9 and F32.900x001 all read as F32; F1, F1.0 or 1F32 read as nothing."""
    code = code.strip().upper()
    dot = code.find(".")
    if dot not in (-1, 3):
        return 0
    compact = code.replace(".", "")
    if (
        len(compact) < 3
        or compact[0] not in _UPPER
        or compact[1] not in _DIGITS
        or not (compact[2] in _DIGITS or compact[2] in _UPPER)
    ):
        return 0
    key = compact[:3]
    mask = _ICD10.get(key, 0)
    for prefix, bit in _ICD10_SUB.get(key, ()):
        if compact.startswith(prefix):
            mask |= bit
    return mask


# --- LOINC: known test codes, not exhaustive (labels catch the rest) --------------------------

_LOINC: dict[str, int] = {}
for _bit, _codes in (
    # HIV antibody and antigen tests (screening, rapid, confirmatory, 4th generation, panels).
    # Fuller lists: the value sets "HIV Laboratory Test Codes (Ab and Ag)"
    # (2.16.840.1.113762.1.4.1056.50) and "HIV Viral Load Tests" (2.16.840.1.113762.1.4.1248.377).
    (
        _HIV,
        (
            "7917-8 7918-6 7919-4 5220-9 5221-7 5222-5 5223-3 5224-1 5225-8 9821-0 18396-2 "
            "21007-0 24012-7 29893-5 30361-0 31201-7 40733-8 42600-7 43009-0 43010-8 44533-8 "
            "44607-0 48345-3 48346-1 49580-4 49905-3 53379-4 56888-1 57975-5 58900-2 68961-2 "
            "69668-2 73905-2 73906-0 75622-1 75666-8 80203-3 80387-4 81641-3 83101-6 85037-0 "
            "86233-4 89365-1 89374-3"
        ),
    ),
    # HIV RNA (viral load) and proviral DNA.
    (
        _HIV,
        (
            "10351-5 20447-9 21008-8 21333-0 23876-6 25836-8 25842-6 29539-4 29541-0 41514-1 "
            "41515-8 41516-6 48510-2 48511-0 48552-4 51780-5 59419-2 62469-2 69354-9 70241-5 "
            "104762-0 104781-0"
        ),
    ),
    # Genetic testing (HL7 genomics reporting codes) and karyotypes.
    (
        _GEN,
        (
            "51968-6 51969-4 81247-9 48018-6 69548-6 53037-8 81252-9 48004-6 48005-3 47998-0 "
            "81290-9 29770-5 33773-3 33774-1 33893-9"
        ),
    ),
):
    for _code in _codes.split():
        _LOINC[_code] = _bit

# --- SNOMED CT: a few common concepts only (China is not a SNOMED member; labels do the rest) --

_SNOMED = {
    "86406008": _HIV,
    "165816005": _HIV,
    "62479008": _HIV,  # HIV infection, detected, AIDS
    "74732009": _PSY,
    "35489007": _PSY,
    "58214004": _PSY,  # mental, depressive, schizophrenia
    "13746004": _PSY,
    "197480006": _PSY,  # bipolar, anxiety disorder
}

# --- ATC -----------------------------------------------------------------------------------------

_ATC_PREFIXES = (
    # HIV: NRTIs, NNRTIs, integrase inhibitors, HIV combinations; HIV protease inhibitors
    # saquinavir..darunavir (not J05AE30 nirmatrelvir/ritonavir, a COVID-19 drug, nor the
    # hepatitis C protease inhibitors once filed in J05AE); entry/fusion inhibitors and the
    # integrase inhibitors' codes before J05AJ existed.
    ("J05AF", _HIV),
    ("J05AG", _HIV),
    ("J05AJ", _HIV),
    ("J05AR", _HIV),
    *((f"J05AE{n:02d}", _HIV) for n in range(1, 11)),
    ("J05AX07", _HIV),
    ("J05AX08", _HIV),
    ("J05AX09", _HIV),
    ("J05AX12", _HIV),
    ("J05AX23", _HIV),
    # Psychiatric: antipsychotics (lithium included), antidepressants, their combinations
    # (flupentixol/melitracen), ADHD stimulants and atomoxetine (N06BA), drugs for alcohol and
    # opioid dependence (N07BB, N07BC). Not anxiolytics (N05B) or hypnotics (N05C): given for
    # sleep, sedation before procedures, spasm and itch far more than for a mental disorder.
    # Not N06BX nootropics (piracetam, citicoline after a stroke) nor caffeine.
    ("N05A", _PSY),
    ("N06A", _PSY),
    ("N06C", _PSY),
    ("N06BA", _PSY),
    ("N07BB", _PSY),
    ("N07BC", _PSY),
)
# Nucleoside analogues licensed only for hepatitis B: adefovir, entecavir, telbivudine,
# tenofovir alafenamide alone. Lamivudine and tenofovir disoproxil treat both and stay HIV.
_ATC_NOT = frozenset({"J05AF08", "J05AF10", "J05AF11", "J05AF13"})
_ATC_GROUP_J05AE = "J05AE"  # the bare subgroup is HIV too


def _atc_mask(code: str) -> int:
    code = code.strip().upper().replace(" ", "")
    if code in _ATC_NOT:
        return 0
    if code == _ATC_GROUP_J05AE:
        return _HIV
    mask = 0
    for prefix, bit in _ATC_PREFIXES:
        if code.startswith(prefix):
            mask |= bit
    return mask


# --- Labels (code displays, department and document titles) --------------------------------------

# (bit, words, unless): a word marks the category unless the label also holds one of `unless`.
_TEXT_RULES: tuple[tuple[int, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        _HIV,
        (
            "艾滋",
            "人类免疫缺陷",
            "获得性免疫缺陷",
            "human immunodeficiency virus",
            "acquired immunodeficiency",
            "acquired immune deficiency",
        ),
        (),
    ),
    # Compounds, not bare 精神: 精神萎靡, 精神差 and 精神可 describe a patient's general state.
    (
        _PSY,
        (
            "精神障碍",
            "精神分裂",
            "精神病",
            "精神疾病",
            "精神发育迟滞",
            "精神科",
            "精神卫生",
            "心理科",
            "抑郁",
            "焦虑",
            "躁狂",
            "双相情感",
            "强迫症",
            "孤独症",
            "自闭症",
            "自杀",
            "schizophren",
            "bipolar",
            "mental disorder",
            "psychosis",
            "psychotic",
            "depressive disorder",
            "anxiety disorder",
            "suicid",
        ),
        (),
    ),
    (
        _REP,
        (
            "流产",
            "人工授精",
            "避孕",
            "不孕",
            "不育",
            "体外受精",
            "试管婴儿",
            "胚胎移植",
            "终止妊娠",
            "引产",
            "节育",
            "输卵管结扎",
            "输精管结扎",
            "abortion",
            "contracepti",
            "infertil",
            "in vitro fertili",
            "artificial insemination",
        ),
        (),
    ),
    (_GEN, ("染色体", "遗传病", "遗传咨询", "唐氏", "chromosom", "karyotyp"), ()),
    # 基因 also names pathogen genotyping (HPV基因分型), tuberculosis resistance genes and
    # recombinant vaccines and drugs (基因工程, 基因重组): those are not a person's genes.
    (
        _GEN,
        ("基因", "genetic", "genomic"),
        (
            "病毒",
            "疫苗",
            "重组",
            "工程",
            "杆菌",
            "细菌",
            "真菌",
            "结核",
            "支原体",
            "衣原体",
            "hpv",
            "hbv",
            "hcv",
            "virus",
            "viral",
            "vaccin",
            "recombinant",
            "bacteri",
        ),
    ),
)
# HIV (any case) or AIDS (capitals: not hearing aids) as a word, also inside Chinese (抗HIV抗体)
# and before Ab/Ag/RNA/DNA (HIVAb); not inside hives or archive.
_HIV_WORD = re.compile(r"(?<![A-Za-z])(?:(?i:hiv)|AIDS)(?=(?i:ab|ag|rna|dna|p24)|[^A-Za-z]|$)")


@lru_cache(maxsize=65_536)
def _text_mask(text: str) -> int:
    lowered = text.lower()
    mask = _HIV if _HIV_WORD.search(text) else 0
    for bit, words, unless in _TEXT_RULES:
        if (
            not mask & bit
            and any(w in lowered for w in words)
            and not any(u in lowered for u in unless)
        ):
            mask |= bit
    return mask


# --- Code systems ------------------------------------------------------------------------------

_ICD10_OIDS = frozenset(
    {"2.16.840.1.113883.6.3", "2.16.840.1.113883.6.90", "2.16.156.10011.2.3.3.11"}
)  # WHO, CM, Chinese CDA diagnosis codes
_LOINC_OID, _SNOMED_OID, _ATC_OID = (
    "2.16.840.1.113883.6.1",
    "2.16.840.1.113883.6.96",
    "2.16.840.1.113883.6.73",
)


def _loinc_mask(code: str) -> int:
    return _LOINC.get(code.strip(), 0)


def _snomed_mask(code: str) -> int:
    return _SNOMED.get(code.strip(), 0)


def _system_matcher(system: str) -> Callable[[str], int] | None:
    s = system.strip().lower()
    oid = s.removeprefix("urn:oid:")
    if (("icd-10" in s or "icd10" in s or "14396" in s) and "pcs" not in s) or (
        oid in _ICD10_OIDS or oid.startswith("2.16.156.10011.2.3.3.11.")
    ):
        return _icd10_mask  # GB/T 14396 is China's ICD-10; ICD-10-PCS is procedures
    if "loinc" in s or oid == _LOINC_OID:
        return _loinc_mask
    if "snomed" in s or oid == _SNOMED_OID:
        return _snomed_mask
    if "whocc" in s or s == "atc" or s.rstrip("/").endswith(("/atc", ":atc")) or oid == _ATC_OID:
        return _atc_mask
    return None  # a local code means nothing by itself; its display still counts


@lru_cache(maxsize=65_536)
def _coding_mask(system: str, code: str, display: str) -> int:
    matcher = _system_matcher(system)
    mask = matcher(code) if matcher is not None else 0
    if display:
        mask |= _text_mask(display)
    return mask
