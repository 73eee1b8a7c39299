"""The benchmarks' printed tables: rows of (what, figure, note), the first column padded."""

from typing import Sequence, Tuple


def print_rows(header: Tuple[str, str, str], rows: Sequence[Tuple[str, str, str]]) -> None:
  width = max(len(r[0]) for r in (header, *rows))
  for name, figure, note in (header, *rows):
    print(f'{name:<{width}}  {figure:>12}  {note}')
