"""RFC 3339 timestamps in JSONLogic, for ``before``/``after``: the string is checked
character by character (calendar dates, zone, fraction) and converted to epoch seconds
with days-from-civil arithmetic, accepting exactly what the engine's parser accepts."""

from __future__ import annotations

from collections.abc import Sequence

from flagstone.flagd_export.jsonlogic import Logic, and_, floor_div, let, not_, or_

_MONTH_DAYS = {"01": 31, "03": 31, "04": 30, "05": 31, "06": 30, "07": 31, "08": 31, "09": 30,
               "10": 31, "11": 30, "12": 31}  # fmt: skip
_DIGITS = [str(d) for d in range(10)]
_MAX_FRACTION_DIGITS = 9


def _days_from_civil(year: Logic, month: Logic, day: Logic) -> Logic:
    """Days since 1970-01-01 of a proleptic Gregorian date, years 1–9999 (Howard
    Hinnant's days_from_civil; every operand of % and floor division is >= 0)."""

    def with_year_of_era(v: list[Logic]) -> Logic:
        y, month, day = v
        era = floor_div(y, 400)
        return let([y, month, day, era], with_era)

    def with_era(v: list[Logic]) -> Logic:
        y, month, day, era = v
        year_of_era = {"-": [y, {"*": [era, 400]}]}
        shifted_month = {"if": [{">": [month, 2]}, {"-": [month, 3]}, {"+": [month, 9]}]}
        day_of_year = {
            "+": [floor_div({"+": [{"*": [153, shifted_month]}, 2]}, 5), {"-": [day, 1]}]
        }
        return let([year_of_era, era, day_of_year], with_day_of_year)

    def with_day_of_year(v: list[Logic]) -> Logic:
        year_of_era, era, day_of_year = v
        day_of_era = {
            "-": [
                {
                    "+": [
                        {"*": [year_of_era, 365]},
                        floor_div(year_of_era, 4),
                        day_of_year,
                    ]
                },
                floor_div(year_of_era, 100),
            ]
        }
        return {"-": [{"+": [{"*": [era, 146097]}, day_of_era]}, 719468]}

    march_based_year = {"-": [year, {"if": [{"<=": [month, 2]}, 1, 0]}]}
    return let([march_based_year, month, day], with_year_of_era)


def _text_number(text: Logic, start: int, length: int) -> Logic:
    # "+" turns digit text into a number (the digits are checked first).
    return {"+": [{"substr": [text, start, length]}, 0]}


def _character(text: Logic, index: int) -> Logic:
    """The character at ``index`` of the string that the ``var`` expression ``text`` reads."""
    path = text["var"]
    return {"var": f"{path}.{index}" if path else str(index)}


def _all_digits(text: Logic, indexes: Sequence[int]) -> Logic:
    return and_(*({"in": [_character(text, i), _DIGITS]} for i in indexes))


def rfc3339_compare(path: str, symbol: str, bound: float) -> Logic:
    """True when the string at ``path`` is an RFC 3339 date-time the engine accepts
    (``YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)``, T and Z in either case, real calendar
    dates, hours < 24, offsets under a day) and its instant ``symbol`` (< or >) ``bound``.

    The instant is computed the way the engine's datetime arithmetic computes it (at
    most 6 fraction digits; (seconds × 10^6 + microseconds) / 10^6), so equal
    instants compare equal on both sides.
    """
    text = {"var": path}

    def with_fields(v: list[Logic]) -> Logic:
        text, year, month, day, hour, minute, second, length, month_text = v
        leap = or_(
            and_({"===": [{"%": [year, 4]}, 0]}, not_({"===": [{"%": [year, 100]}, 0]})),
            {"===": [{"%": [year, 400]}, 0]},
        )
        month_cases: list[Logic] = [{"===": [month_text, "02"]}, {"if": [leap, 29, 28]}]
        for month_digits, days in _MONTH_DAYS.items():
            month_cases.extend([{"===": [month_text, month_digits]}, days])
        date_time_valid = and_(
            _all_digits(text, [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]),
            {"===": [_character(text, 4), "-"]},
            {"===": [_character(text, 7), "-"]},
            {"in": [_character(text, 10), ["T", "t"]]},
            {"===": [_character(text, 13), ":"]},
            {"===": [_character(text, 16), ":"]},
            {">=": [year, 1]},
            {"<=": [1, day, {"if": [*month_cases, 0]}]},
            {"<=": [hour, 23]},
            {"<=": [minute, 59]},
            {"<=": [second, 59]},
        )
        local_seconds = {
            "+": [
                {"*": [_days_from_civil(year, month, day), 86400]},
                {"*": [hour, 3600]},
                {"*": [minute, 60]},
                second,
            ]
        }
        # The zone is "Z"/"z" (1 character) or "±HH:MM" (6); 0 means neither.
        zone_length = {
            "if": [
                {"in": [{"substr": [text, -1]}, ["Z", "z"]]},
                1,
                {"in": [{"substr": [text, -6, 1]}, ["+", "-"]]},
                6,
                0,
            ]
        }
        return and_(
            date_time_valid,
            let([text, length, local_seconds, zone_length], with_zone),
        )

    def with_zone(v: list[Logic]) -> Logic:
        text, length, local_seconds, zone_length = v
        # Between the seconds and the zone: nothing, or "." and 1–9 digits.
        fraction_length = {"-": [{"-": [length, 19]}, zone_length]}  # "-" takes two
        fraction_valid = or_(
            {"===": [fraction_length, 0]},
            and_(
                {"<=": [2, fraction_length, 1 + _MAX_FRACTION_DIGITS]},
                {"===": [_character(text, 19), "."]},
                *(
                    or_(
                        {">=": [i, {"+": [19, fraction_length]}]},
                        {"in": [_character(text, i), _DIGITS]},
                    )
                    for i in range(20, 20 + _MAX_FRACTION_DIGITS)
                ),
            ),
        )
        offset_hours = {"+": [{"substr": [text, -5, 2]}, 0]}
        offset_minutes = {"+": [{"substr": [text, -2, 2]}, 0]}
        offset = {"+": [{"*": [offset_hours, 3600]}, {"*": [offset_minutes, 60]}]}
        zone_valid = or_(
            {"===": [zone_length, 1]},
            and_(
                {"===": [zone_length, 6]},
                *({"in": [{"substr": [text, i, 1]}, _DIGITS]} for i in (-5, -4, -2, -1)),
                {"===": [{"substr": [text, -3, 1]}, ":"]},
                # datetime takes any two-digit minutes if the offset is under a day.
                {"<": [offset, 86400]},
            ),
        )
        utc_seconds = {
            "if": [
                {"===": [zone_length, 1]},
                local_seconds,
                {"===": [{"substr": [text, -6, 1]}, "+"]},
                {"-": [local_seconds, offset]},
                {"+": [local_seconds, offset]},
            ]
        }
        fraction_digits = {"if": [{">": [fraction_length, 0]}, {"-": [fraction_length, 1]}, 0]}
        # The engine keeps at most 6 fraction digits (datetime's microseconds): pad the
        # digits with zeros and keep 6. With no fraction this is 0.
        micros = {
            "+": [
                {
                    "substr": [
                        {"cat": [{"substr": [text, 20, fraction_digits]}, "000000"]},
                        0,
                        6,
                    ]
                },
                0,
            ]
        }
        instant = {"/": [{"+": [{"*": [utc_seconds, 1_000_000]}, micros]}, 1_000_000]}
        return and_({">": [zone_length, 0]}, fraction_valid, zone_valid, {symbol: [instant, bound]})

    fields = [
        text,
        _text_number(text, 0, 4),
        _text_number(text, 5, 2),
        _text_number(text, 8, 2),
        _text_number(text, 11, 2),
        _text_number(text, 14, 2),
        _text_number(text, 17, 2),
        {"var": f"{path}.length" if path else "length"},
        {"substr": [text, 5, 2]},
    ]
    # The length test first: shorter strings never reach the arithmetic.
    return and_(
        {
            "<=": [
                19 + 1,
                {"var": f"{path}.length" if path else "length"},
                19 + 1 + _MAX_FRACTION_DIGITS + 6,
            ]
        },
        let(fields, with_fields),
    )
