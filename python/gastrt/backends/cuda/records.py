"""The CUDA program bytecode, by field name.

The one definition is ``csrc/cuda/program_records.h`` (a POD struct per record, read by the
executor); the extension exports its table (``_native.cuda_program_layout`` /
``cuda_program_constants``, in every build) and this module encodes and decodes records from it,
so the lowering, the test harness and the simulator never write a field by position.

A program is a flat int64 array of records ``[opcode, nfields, words...]``; a grouped record
(conv) is ``[opcode, 1 + count * nfields, count, words of each problem...]``.
"""
from __future__ import annotations

import functools

from ...errors import GastrtError
from ..base import native_module


class RecordLayout:
    """The program records of the compiled executor: ``opcode(name)``, ``encode`` / ``decode`` by
    field name. Buffer references: ``ref_none`` / ``ref_input`` / ``ref_output`` (or an arena byte
    offset >= 0)."""

    def __init__(self, records: dict, constants: dict):
        self.records = {name: {"opcode": int(r["opcode"]), "nfields": int(r["nfields"]),
                               "grouped": bool(r["grouped"]),
                               "fields": {f: (int(o), int(c)) for f, (o, c) in r["fields"].items()}}
                        for name, r in records.items()}
        self._by_opcode = {r["opcode"]: name for name, r in self.records.items()}
        self.ref_none = int(constants["ref_none"])
        self.ref_input = int(constants["ref_input"])
        self.ref_output = int(constants["ref_output"])
        self.stream_table_cols = int(constants["stream_table_cols"])
        self.max_conv_group = int(constants["max_conv_group"])

    def opcode(self, name: str) -> int:
        return self.records[name]["opcode"]

    def name_of(self, opcode: int) -> str:
        try:
            return self._by_opcode[int(opcode)]
        except KeyError:
            raise GastrtError(f"unknown CUDA program opcode {opcode}") from None

    def count(self, name: str, field: str) -> int:
        """Words of a field: 1, or the length of a fixed array (e.g. rie_encode ``out``)."""
        return self.records[name]["fields"][field][1]

    def words(self, name: str, **fields) -> list[int]:
        """One struct of record ``name`` (no header). Every field must be given: an int, or for an
        array field a sequence of at most its count (the rest zero-filled)."""
        rec = self.records[name]
        missing = set(rec["fields"]) - set(fields)
        unknown = set(fields) - set(rec["fields"])
        if missing or unknown:
            raise GastrtError(f"{name} record: missing fields {sorted(missing)}, unknown {sorted(unknown)}")
        out = [0] * rec["nfields"]
        for f, (off, cnt) in rec["fields"].items():
            v = fields[f]
            if cnt == 1:
                out[off] = int(v)
                continue
            v = [int(u) for u in v]
            if len(v) > cnt:
                raise GastrtError(f"{name} record: {f} has {len(v)} values, at most {cnt}")
            out[off:off + len(v)] = v
        return out

    def encode(self, name: str, **fields) -> list[int]:
        """``[opcode, nfields, words...]`` of one record (see :meth:`words`)."""
        rec = self.records[name]
        if rec["grouped"]:
            raise GastrtError(f"{name} is a grouped record: use encode_group")
        return [rec["opcode"], rec["nfields"]] + self.words(name, **fields)

    def encode_group(self, name: str, items: list[dict]) -> list[int]:
        """``[opcode, 1 + count * nfields, count, words of each item...]`` of a grouped record."""
        rec = self.records[name]
        if not rec["grouped"] or not 1 <= len(items) <= self.max_conv_group:
            raise GastrtError(f"{name}: a group of 1..{self.max_conv_group} records, got {len(items)}")
        words = [w for it in items for w in self.words(name, **it)]
        return [rec["opcode"], 1 + len(words), len(items)] + words

    def decode(self, name: str, words) -> dict:
        """One struct's words -> {field: int, or list for an array field}."""
        out = {}
        for f, (off, cnt) in self.records[name]["fields"].items():
            out[f] = int(words[off]) if cnt == 1 else [int(v) for v in words[off:off + cnt]]
        return out

    def decode_program(self, code) -> list[tuple[str, list[dict]]]:
        """A program -> [(record name, [fields of each struct])] (one struct unless grouped);
        raises on a truncated or malformed record."""
        code = [int(v) for v in code]
        steps, i = [], 0
        while i < len(code):
            if i + 2 > len(code) or code[i + 1] < 0 or i + 2 + code[i + 1] > len(code):
                raise GastrtError(f"program: truncated record at {i}")
            name = self.name_of(code[i])
            rec, body = self.records[name], code[i + 2:i + 2 + code[i + 1]]
            nf = rec["nfields"]
            if rec["grouped"]:
                cnt = body[0] if body else 0
                if not 1 <= cnt <= self.max_conv_group or len(body) != 1 + cnt * nf:
                    raise GastrtError(f"program: {name} record size")
                structs = [self.decode(name, body[1 + q * nf:1 + (q + 1) * nf]) for q in range(cnt)]
            else:
                if len(body) != nf:
                    raise GastrtError(f"program: {name} record size")
                structs = [self.decode(name, body)]
            steps.append((name, structs))
            i += 2 + len(body)
        return steps


@functools.lru_cache(maxsize=None)
def program_layout() -> RecordLayout:
    """The record layout of this install's executor (program_records.h via the extension)."""
    mod = native_module()
    if mod is None:
        raise GastrtError("the CUDA program layout comes from the compiled extension gastrt._native, "
                          "which this install lacks")
    return RecordLayout(mod.cuda_program_layout(), mod.cuda_program_constants())
