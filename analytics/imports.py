"""The other-channel customers CSV (the rows ``POST /api/v1/analytics/other-customers`` accepts), read for
the browser upload page: every row is validated first and each problem is reported with its line, so a
file with any bad row writes nothing."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from .apis import CSV_COLUMNS, OtherCustomerInputSerializer

REQUIRED_COLUMNS = ("external_id", "channel", "lead_at")
MAX_ROWS = 10_000
MAX_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class RowError:
    line: int  # the line of the file (the header is line 1)
    external_id: str
    field: str
    message: str


def read_other_customers_csv(data: bytes) -> tuple[list[dict], list[RowError]]:
    """(validated rows, errors). Errors name the line, the row's external id, the field and the problem;
    a file-level problem (too big, not UTF-8, columns missing) is one error on line 1."""
    if len(data) > MAX_BYTES:
        return [], [RowError(1, "", "file", f"The file is larger than {MAX_BYTES // (1024 * 1024)} MB.")]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], [RowError(1, "", "file", "The file is not UTF-8 text.")]
    reader = csv.DictReader(io.StringIO(text))
    columns = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        return [], [RowError(1, "", "file", f"Columns missing: {', '.join(missing)}.")]
    reader.fieldnames = columns
    rows: list[dict] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(reader):
        line = index + 2
        if index >= MAX_ROWS:
            errors.append(RowError(line, "", "file", f"More than {MAX_ROWS:,} rows: split the file."))
            break
        values = {
            key: value.strip()
            for key, value in raw.items()
            if key in CSV_COLUMNS and isinstance(value, str) and value.strip()
        }
        external_id = values.get("external_id", "")
        if not any(isinstance(value, str) and value.strip() for value in raw.values()):
            continue  # a blank line
        serializer = OtherCustomerInputSerializer(data=values)
        if not serializer.is_valid():
            for field, messages in serializer.errors.items():
                field = "row" if field == "non_field_errors" else field
                for message in messages if isinstance(messages, list) else [messages]:
                    errors.append(RowError(line, external_id, field, str(message)))
            continue
        if external_id in seen:
            errors.append(RowError(line, external_id, "external_id", f"Already on line {seen[external_id]}."))
            continue
        seen[external_id] = line
        rows.append(serializer.validated_data)
    if not rows and not errors:
        errors.append(RowError(1, "", "file", "The file has no rows."))
    return rows, errors
