"""HL7 v2 messages the HL7 v2 adapter's tests share: a township centre's admission and lab
report as its HIS writes them, the Microsoft FHIR-Converter sample files, checks on what the
adapter returns, and the Hypothesis strategies of its property tests. Synthetic data only; not
collected as tests."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from adapters.hl7v2_values import VALUE_TYPES
from adapters.report import IngestReport
from domain.resident_id import make_resident_id

INSTITUTION = "dongcheng-thc"
RID = make_resident_id("341122", date(1956, 4, 2), 124)  # synthetic; even sequence: female
NAME = "王秀英"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SAMPLES = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "testdata"
    / "hl7v2"
    / "microsoft-fhir-converter"
)
SAMPLE_FILES = (
    sorted(p for p in SAMPLES.iterdir() if p.name != "LICENSE") if SAMPLES.is_dir() else []
)


def message(*segments: str, bom: bool = True) -> bytes:
    """A message as a Chinese HIS writes it to a file: LF separators and a byte-order mark."""
    return ("\ufeff" if bom else "").encode() + "\n".join(segments).encode()


def admission(event: str = "A01", control: str = "MSG-20260302-0001", **fields: str) -> bytes:
    pv1 = fields.get(
        "pv1",
        "PV1|1|I|心内科^301^2||||D017^李^建国|||CAR||||1|||||"
        "V2026030200017|||||||||||||||||||||||||20260302091000",
    )
    return message(
        f"MSH|^~\\&|HIS|DCTHC|HIE|COUNTY|20260302091500||ADT^{event}^ADT_{event}|{control}|P|"
        f"{fields.get('version', '2.5.1')}|||||CHN|{fields.get('charset', 'UNICODE UTF-8')}",
        "EVN|A01|20260302091500",
        fields.get("pid", f"PID|1||{RID}^^^CHN^NNCHN~MR000123^^^DCTHC^MR||王^秀英||19560402|F"),
        "NK1|1|李^建国|SPO",
        pv1,
        "DG1|1||I10^原发性高血压^I10^^^^2019|原发性高血压|20260302093000|F",
        "AL1|1|DA|C0030842^青霉素^L|SV|皮疹|20200115",
        "IN1|1|NCMS^新农合",
    )


def pv1(
    klass: str = "I", visit: str = "", admit: str = "", discharge: str = "", **more: str
) -> str:
    """A PV1: class (PV1-2), visit number (-19), admit and discharge times (-44, -45), and any
    other field as ``f<n>``."""
    fields = ["PV1", "1", klass] + [""] * 43
    fields[19], fields[44], fields[45] = visit, admit, discharge
    for name, value in more.items():
        fields[int(name[1:])] = value
    return "|".join(fields).rstrip("|")


def result(*obx: str, obr25: str = "F") -> bytes:
    return message(
        "MSH|^~\\&|LIS|DCTHC|HIE|COUNTY|20260302101500||ORU^R01^ORU_R01|LIS-7781|P|2.5.1",
        f"PID|1||MR000123^^^DCTHC^MR~{RID}^^^身份证^ID||王^秀英||19560402|F",
        "PV1|1|O|全科门诊||||||||||||||||V2026030200017",
        "ORC|RE|P456^HIS|F789^LIS",
        f"OBR|1|P456^HIS|F789^LIS|24331-1^血脂四项^LN|||20260302090000|||||||||||||||"
        f"20260302101000|||{obr25}",
        *obx,
    )


GLUCOSE = "OBX|1|NM|14771-0^空腹血糖^LN||7.20|mmol/L^mmol/L^UCUM|3.9-6.1|H|||F|||20260302093000"


def obx(
    n: int,
    kind: str,
    value: str,
    *,
    code: str = "14771-0^空腹血糖^LN",
    unit: str = "",
    sub: str = "",
    status: str = "F",
    at: str = "20260302093000",
) -> str:
    """One OBX: value type (OBX-2), value (OBX-5), unit (OBX-6), status (OBX-11), time (-14)."""
    return f"OBX|{n}|{kind}|{code}|{sub}|{value}|{unit}|||||{status}|||{at}"


def by_kind(report: IngestReport) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in report.items:
        out.setdefault(item["kind"], []).append(item)
    return out


def assert_no_patient_data(report: IngestReport) -> None:
    for problem in report.problems:
        assert RID not in str(problem) and NAME not in str(problem)


def by_source(report: IngestReport) -> dict[str, dict[str, Any]]:
    return {item["source_id"]: item for item in report.items}


# Hypothesis strategies the HL7 v2 tests share -------------------------------------------------

# OBX-2: every value type the adapter knows, and anything else a sender may write there.
value_types = st.one_of(
    st.sampled_from(sorted(VALUE_TYPES)),
    st.text(alphabet="ABCDEFNMSTXZ0123456789^&~ ", max_size=4),
)
# Field text as senders write it: any character but the segment separators (CR, LF and the
# MLLP bytes), with the delimiters, escape sequences and Chinese text mixed in on purpose.
field_text = st.one_of(
    st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x0b\x1c"), max_size=60
    ),
    st.text(alphabet="|^~\\&FSTREXHN.brsp0123456789ABCDEF王秀英 -:", max_size=60),
)
# Chinese names (and the odd Latin letter), to go through a character set and back.
names = st.text(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5) | st.sampled_from("abcXYZ·"),
    min_size=1,
    max_size=8,
)
