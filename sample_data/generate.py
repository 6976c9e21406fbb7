"""Write convstore's sample data: a native export and small ChatGPT and Claude exports.

Run from anywhere: ``python sample_data/generate.py``. Standard library only, no network, and a
fixed seed, so every run writes the same bytes (``sha256sum sample_data/*.json`` is stable).

- ``sessions.json``: convstore's own export format, version 1: 40 sessions, about 3,000
  messages, 6 users in 3 organisations, March to October 2026, with tool calls, images,
  code blocks, several scripts and a few long answers;
- ``chatgpt_conversations.json``: a ChatGPT ``conversations.json`` with the awkward parts of
  the real one (root node, hidden system node, regenerated reply, null create_time,
  multimodal, code, thoughts and tool nodes);
- ``claude_conversations.json``: a Claude ``conversations.json`` with a thinking block and an
  empty-text message.

The rare words ``zyzzyva``, ``quokka`` and ``fjord`` are placed in a handful of messages
only (the counts are printed), so search demos have something to find; ``python`` is common.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SEED = 20260301
EXPORTED_AT = "2026-11-01T00:00:00.000000Z"
RARE_WORDS = ("zyzzyva", "quokka", "fjord")

JSON = dict[str, Any]


def iso(ts: datetime) -> str:
    """UTC ISO-8601 with exactly 6 fractional digits and a trailing Z."""
    ts = ts.astimezone(timezone.utc)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond:06d}Z"


def code(lang: str, body: str) -> str:
    return f"```{lang}\n{body.strip()}\n```"


# --- content banks --------------------------------------------------------------------------
# Each item is (question, explanation, code block or ""). Answers are assembled from an item,
# an opening, a few topic sentences and a closing, so 3,000 messages do not read as 30 copies.


@dataclass(frozen=True)
class Topic:
    name: str
    titles: tuple[str, ...]
    items: tuple[tuple[str, str, str], ...]
    sentences: tuple[str, ...]


PYTHON = Topic(
    "python",
    (
        "Python questions",
        "Python scripting help",
        "Cleaning data with Python",
        "Python async and typing",
        "Refactoring a Python script",
    ),
    (
        (
            "How do I read a CSV file in Python and sum one column?",
            "The csv module streams rows, so memory stays flat even for a large file.",
            code(
                "python",
                """
import csv

total = 0.0
with open("sales.csv", newline="", encoding="utf-8") as f:
    for row in csv.DictReader(f):
        total += float(row["amount"])
print(f"total: {total:.2f}")
""",
            ),
        ),
        (
            "What's the right way to parse ISO timestamps ending in Z in python?",
            "Since Python 3.11 `datetime.fromisoformat` accepts the trailing `Z`; on older "
            "versions replace it with `+00:00` first.",
            code(
                "python",
                """
from datetime import datetime, timezone

ts = datetime.fromisoformat("2026-03-04T09:15:02.123456Z")
assert ts.tzinfo == timezone.utc
print(ts.astimezone().isoformat())
""",
            ),
        ),
        (
            "How can I remove duplicates from a list but keep the original order?",
            "Dicts keep insertion order, so `dict.fromkeys` is the shortest correct answer.",
            code(
                "python",
                """
items = ["b", "a", "b", "c", "a"]
unique = list(dict.fromkeys(items))
print(unique)  # ['b', 'a', 'c']
""",
            ),
        ),
        (
            "How do I run a bunch of HTTP requests concurrently with asyncio?",
            "`asyncio.gather` runs the coroutines concurrently; a semaphore keeps you from "
            "opening hundreds of connections at once.",
            code(
                "python",
                """
import asyncio
import httpx

async def fetch_all(urls: list[str], limit: int = 10) -> list[int]:
    sem = asyncio.Semaphore(limit)
    async with httpx.AsyncClient(timeout=10) as client:
        async def one(url: str) -> int:
            async with sem:
                r = await client.get(url)
                return r.status_code
        return await asyncio.gather(*(one(u) for u in urls))

print(asyncio.run(fetch_all(["https://example.com"] * 5)))
""",
            ),
        ),
        (
            "Can you write a python decorator that retries a function when it raises?",
            "Keep the retry policy explicit (attempts, delay, which exceptions) so it never "
            "swallows a bug silently.",
            code(
                "python",
                """
import functools
import time

def retry(times: int = 3, delay: float = 0.5, on: tuple[type[Exception], ...] = (OSError,)):
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            for attempt in range(1, times + 1):
                try:
                    return fn(*args, **kwargs)
                except on:
                    if attempt == times:
                        raise
                    time.sleep(delay * attempt)
        return inner
    return wrap
""",
            ),
        ),
        (
            "How do I type-hint a function that takes a callback?",
            "Use `collections.abc.Callable` with the argument types in a list and the return "
            "type last.",
            code(
                "python",
                """
from collections.abc import Callable

def on_each(items: list[str], callback: Callable[[str, int], None]) -> None:
    for i, item in enumerate(items):
        callback(item, i)
""",
            ),
        ),
        (
            "What's the cleanest way to merge two dicts in Python 3.12?",
            "The `|` operator returns a new dict; values from the right-hand side win.",
            code(
                "python",
                """
defaults = {"theme": "dark", "page_size": 20}
overrides = {"page_size": 50}
settings = defaults | overrides
print(settings)  # {'theme': 'dark', 'page_size': 50}
""",
            ),
        ),
        (
            "How do I group records by a key without pandas?",
            "`collections.defaultdict(list)` is the simplest; `itertools.groupby` only groups "
            "adjacent items, so sort first if you use it.",
            code(
                "python",
                """
from collections import defaultdict

orders = [("alice", 12.5), ("bob", 3.0), ("alice", 7.25)]
by_user: dict[str, list[float]] = defaultdict(list)
for user, amount in orders:
    by_user[user].append(amount)
print({u: sum(a) for u, a in by_user.items()})
""",
            ),
        ),
        (
            "How should I measure how long a function takes in python?",
            "`time.perf_counter()` is monotonic and high resolution; for micro-benchmarks use "
            "`timeit`, which repeats the call and disables the garbage collector.",
            code(
                "python",
                """
import time
import timeit

t0 = time.perf_counter()
sorted(range(1_000_000), reverse=True)
print(f"{(time.perf_counter() - t0) * 1000:.1f} ms")
print(min(timeit.repeat("sorted(x)", "x = list(range(1000))", number=1000, repeat=5)))
""",
            ),
        ),
        (
            "How do I write a pytest fixture that gives each test a temporary folder?",
            "pytest already ships `tmp_path`, a fresh `pathlib.Path` per test; build your own "
            "fixture on top of it.",
            code(
                "python",
                """
import pytest

@pytest.fixture
def store(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    return folder

def test_store_starts_empty(store):
    assert list(store.iterdir()) == []
""",
            ),
        ),
        (
            "How do I sort a list of dicts by two keys, one descending?",
            "Sort by a tuple key and negate the numeric field you want descending.",
            code(
                "python",
                """
people = [
    {"name": "Zoë", "age": 31},
    {"name": "Émile", "age": 31},
    {"name": "Ana", "age": 25},
]
people.sort(key=lambda p: (-p["age"], p["name"]))
print([p["name"] for p in people])
""",
            ),
        ),
        (
            "Why does my dataclass complain about a mutable default list?",
            "A list default would be shared by every instance, so dataclasses refuse it; use "
            "`field(default_factory=list)`.",
            code(
                "python",
                """
from dataclasses import dataclass, field

@dataclass
class Basket:
    owner: str
    items: list[str] = field(default_factory=list)
""",
            ),
        ),
        (
            "How do I count word frequencies in a text file in python?",
            "`collections.Counter` does the counting; lower-case and split on non-letters so "
            "'Python,' and 'python' count as one word.",
            code(
                "python",
                """
import re
from collections import Counter
from pathlib import Path

words = re.findall(r"[a-zà-ÿ']+", Path("notes.txt").read_text(encoding="utf-8").lower())
for word, n in Counter(words).most_common(10):
    print(f"{n:5d}  {word}")
""",
            ),
        ),
        (
            "How do I find all .py files under a folder?",
            "`pathlib.Path.rglob` walks the tree lazily and yields paths you can filter.",
            code(
                "python",
                """
from pathlib import Path

py_files = sorted(p for p in Path("src").rglob("*.py") if ".venv" not in p.parts)
print(len(py_files), "python files")
""",
            ),
        ),
        (
            "How can I cache an expensive function call in python?",
            "`functools.lru_cache` memoises by arguments; they must be hashable, and "
            "`cache_info()` shows the hit rate.",
            code(
                "python",
                """
from functools import lru_cache

@lru_cache(maxsize=1024)
def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)

print(fib(200), fib.cache_info())
""",
            ),
        ),
        (
            "My python script is slow. How do I find out where the time goes?",
            "Profile before you optimise: `cProfile` gives per-function totals, and sorting by "
            "cumulative time shows the expensive call paths.",
            code(
                "bash",
                """
python -m cProfile -o profile.out my_script.py
python -c "import pstats; pstats.Stats('profile.out').sort_stats('cumtime').print_stats(15)"
""",
            ),
        ),
        (
            "How do I write my own context manager to time a block of code?",
            "`contextlib.contextmanager` turns a generator into a context manager; the code "
            "after `yield` runs even if the block raises.",
            code(
                "python",
                """
import time
from contextlib import contextmanager

@contextmanager
def timed(label: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        print(f"{label}: {(time.perf_counter() - t0) * 1000:.1f} ms")

with timed("load"):
    data = [i * i for i in range(10**6)]
""",
            ),
        ),
        (
            "How do I convert a pandas column of strings to datetimes?",
            "`pd.to_datetime` with `utc=True` gives a timezone-aware column; `errors='coerce'` "
            "turns bad values into NaT instead of raising.",
            code(
                "python",
                """
import pandas as pd

df = pd.DataFrame({"ts": ["2026-03-04 09:15", "not a date", "2026-03-05 10:00"]})
df["ts"] = pd.to_datetime(df["ts"], utc=True, errors="coerce")
print(df.dtypes, df["ts"].isna().sum())
""",
            ),
        ),
        (
            "What's the difference between a python generator and a list comprehension?",
            "A list comprehension builds the whole list now; a generator expression produces "
            "items one at a time, which saves memory when you only iterate once.",
            code(
                "python",
                """
squares_list = [n * n for n in range(10)]      # all 10 values in memory
squares_gen = (n * n for n in range(10))       # computed lazily
print(sum(squares_gen))
""",
            ),
        ),
        (
            "How do I handle Ctrl-C cleanly in a long-running python script?",
            "Catch `KeyboardInterrupt` at the top level, finish or roll back the current unit "
            "of work, and exit with status 130 like shells expect.",
            code(
                "python",
                """
import sys

def main() -> int:
    try:
        for batch in range(1_000):
            process(batch)
    except KeyboardInterrupt:
        print("interrupted, last batch rolled back", file=sys.stderr)
        return 130
    return 0

if __name__ == "__main__":
    sys.exit(main())
""",
            ),
        ),
    ),
    (
        "In Python the idiomatic version is usually also the fastest one.",
        "Type hints cost nothing at run time, and mypy or pyright will catch the mistake next "
        "time.",
        "If you are on an older Python, check the version first with `python --version`.",
        "The standard library covers this well, so there is no need for a new dependency.",
        "Keep the function small and pure so it is easy to test with pytest.",
        "Under the hood CPython does the heavy part in C, which is why this is quick.",
        "If the input can be large, prefer streaming over loading everything into memory.",
        "Add a docstring that says why, not what; the code already says what.",
        "Run it under `python -X dev` once: it turns on extra warnings that catch resource leaks.",
        "Note that this returns a new object and leaves the original untouched.",
        "You can check the behaviour interactively in the python REPL before committing.",
        "Virtual environments keep these packages away from the system python.",
        "For very hot loops, measure first; a profiler beats intuition every time.",
        "Python 3.12 gives much better error messages here, so upgrading helps debugging.",
    ),
)

SQL = Topic(
    "sql",
    ("SQL query help", "DuckDB and Parquet", "Window functions", "Speeding up a report query"),
    (
        (
            "How do I get the latest row per customer in SQL?",
            "Number the rows per customer with a window function and keep the first.",
            code(
                "sql",
                """
SELECT *
FROM (
    SELECT o.*, row_number() OVER (PARTITION BY customer_id ORDER BY created_at DESC) AS rn
    FROM orders AS o
) AS t
WHERE rn = 1;
""",
            ),
        ),
        (
            "How can I compute a running total of revenue by day?",
            "`SUM(...) OVER (ORDER BY day)` accumulates in order; aggregate to days first.",
            code(
                "sql",
                """
SELECT day, revenue, sum(revenue) OVER (ORDER BY day) AS running_total
FROM (
    SELECT date_trunc('day', created_at) AS day, sum(amount) AS revenue
    FROM payments
    GROUP BY 1
) AS daily
ORDER BY day;
""",
            ),
        ),
        (
            "How do I find duplicate emails in a users table?",
            "Group by the normalised email and keep groups with more than one row.",
            code(
                "sql",
                """
SELECT lower(trim(email)) AS email, count(*) AS n, min(id) AS keep_id
FROM users
GROUP BY 1
HAVING count(*) > 1
ORDER BY n DESC;
""",
            ),
        ),
        (
            "Can DuckDB query a folder of Parquet files directly?",
            "Yes: a glob in the FROM clause reads every file, and filters are pushed down to "
            "the row groups.",
            code(
                "sql",
                """
SELECT user_id, count(*) AS messages
FROM read_parquet('archive/**/*.parquet', hive_partitioning = true)
WHERE created_at >= TIMESTAMP '2026-05-01'
GROUP BY user_id
ORDER BY messages DESC
LIMIT 10;
""",
            ),
        ),
        (
            "My query that filters by date is slow. Should I add an index?",
            "An index on the filtered column (plus the grouping key) lets the planner skip most "
            "rows; check with EXPLAIN before and after.",
            code(
                "sql",
                """
CREATE INDEX IF NOT EXISTS orders_created_customer ON orders (created_at, customer_id);
EXPLAIN QUERY PLAN
SELECT customer_id, sum(amount) FROM orders
WHERE created_at >= '2026-06-01' GROUP BY customer_id;
""",
            ),
        ),
        (
            "How do I write a recursive CTE for an org chart?",
            "The anchor member selects the root; the recursive member joins children to the "
            "rows found so far.",
            code(
                "sql",
                """
WITH RECURSIVE chain AS (
    SELECT id, name, manager_id, 0 AS depth FROM employees WHERE manager_id IS NULL
    UNION ALL
    SELECT e.id, e.name, e.manager_id, c.depth + 1
    FROM employees AS e JOIN chain AS c ON e.manager_id = c.id
)
SELECT repeat('  ', depth) || name AS org FROM chain ORDER BY depth, name;
""",
            ),
        ),
        (
            "How do I upsert a row in SQLite?",
            "`INSERT ... ON CONFLICT ... DO UPDATE` works since SQLite 3.24; `excluded` refers "
            "to the row you tried to insert.",
            code(
                "sql",
                """
INSERT INTO settings (user_id, key, value) VALUES (?, ?, ?)
ON CONFLICT (user_id, key) DO UPDATE SET value = excluded.value;
""",
            ),
        ),
        (
            "How do I count distinct users per day?",
            "Truncate the timestamp to a day and count distinct ids in each group.",
            code(
                "sql",
                """
SELECT CAST(created_at AS DATE) AS day, count(DISTINCT user_id) AS users
FROM events
GROUP BY 1
ORDER BY 1;
""",
            ),
        ),
        (
            "How do I find customers who never placed an order?",
            "A LEFT JOIN keeps every customer; the ones with no match have NULLs on the right.",
            code(
                "sql",
                """
SELECT c.id, c.name
FROM customers AS c
LEFT JOIN orders AS o ON o.customer_id = c.id
WHERE o.id IS NULL;
""",
            ),
        ),
        (
            "What is the difference between WHERE and HAVING?",
            "WHERE filters rows before grouping, HAVING filters groups after aggregation.",
            code(
                "sql",
                """
SELECT country, count(*) AS users
FROM users
WHERE signup_date >= '2026-01-01'   -- rows
GROUP BY country
HAVING count(*) >= 100;              -- groups
""",
            ),
        ),
    ),
    (
        "Always look at the query plan before and after a change.",
        "Window functions run after WHERE and GROUP BY, which is why you wrap them in a "
        "subquery to filter on them.",
        "DuckDB is columnar, so selecting only the columns you need matters more than in SQLite.",
        "Parameterise the values instead of formatting them into the string; it avoids SQL "
        "injection and helps plan caching.",
        "Store timestamps in UTC and convert at the edges.",
        "If the table is small, a full scan is fine and an index only slows down writes.",
        "You can run the same query from python with `duckdb.sql(...)` and get a DataFrame back.",
        "NULL never equals anything, not even NULL, so use IS NULL.",
    ),
)

BASH = Topic(
    "bash",
    ("Shell one-liners", "Git and Docker cleanup", "Linux admin questions"),
    (
        (
            "How do I find files bigger than 100 MB?",
            "`find` can filter by size and print sizes; sort numerically to see the worst.",
            code("bash", "find . -type f -size +100M -exec du -h {} + | sort -rh | head -20"),
        ),
        (
            "How do I rename all .jpeg files to .jpg in a folder?",
            "Parameter expansion strips the old extension; quote names so spaces survive.",
            code("bash", 'for f in *.jpeg; do mv -- "$f" "${f%.jpeg}.jpg"; done'),
        ),
        (
            "How do I follow a log and only show errors?",
            "`tail -F` survives log rotation; `grep --line-buffered` keeps output flowing.",
            code("bash", 'tail -F /var/log/app.log | grep --line-buffered -iE "error|traceback"'),
        ),
        (
            "How many lines of python are in this repo?",
            "Count tracked files only, so the virtualenv does not inflate the number.",
            code("bash", "git ls-files '*.py' | xargs wc -l | tail -1"),
        ),
        (
            "How do I run a script every 5 minutes with cron?",
            "Use absolute paths: cron runs with a minimal environment and no virtualenv.",
            code(
                "bash",
                """
crontab -e
# m h dom mon dow command
*/5 * * * * /home/me/app/.venv/bin/python /home/me/app/sync.py >> /tmp/sync.log 2>&1
""",
            ),
        ),
        (
            "How do I undo my last git commit but keep the changes?",
            "`git reset --soft HEAD~1` moves the branch back and leaves the changes staged.",
            code("bash", "git reset --soft HEAD~1\ngit status"),
        ),
        (
            "Which process is using port 8000?",
            "`ss` is installed everywhere now; `lsof` gives the same answer with more detail.",
            code("bash", "ss -ltnp 'sport = :8000'\nlsof -i :8000"),
        ),
        (
            "How do I compress a folder with zstd?",
            "GNU tar understands `--zstd`; `-T0` on zstd itself uses every core.",
            code(
                "bash",
                "tar --zstd -cf backup.tar.zst data/\n"
                "tar -cf - data/ | zstd -T0 -19 -o backup.tar.zst",
            ),
        ),
        (
            "Docker is eating my disk. How do I clean it up?",
            "Check what uses space first, then prune dangling images and stopped containers.",
            code("bash", "docker system df\ndocker image prune -a --filter 'until=168h'"),
        ),
        (
            "How do I replace a string in many files at once?",
            "`grep -l` lists the files, `sed -i` edits them in place; try without `-i` first.",
            code("bash", "grep -rl 'old_name' src/ | xargs sed -i 's/old_name/new_name/g'"),
        ),
    ),
    (
        "Quote your variables; file names with spaces are more common than you think.",
        "`set -euo pipefail` at the top of a script makes failures loud.",
        "Try the command with `echo` in front first to see what it would do.",
        "On macOS some flags differ because the tools are BSD, not GNU.",
        "`man` pages are terse but `tldr` gives quick examples.",
        "If you need this more than twice, put it in a small python or bash script.",
    ),
)

COOKING = Topic(
    "cooking",
    ("Dinner ideas", "Baking questions", "Recipe substitutions", "Meal prep for the week"),
    (
        (
            "How long should I roast a whole chicken at 200 °C?",
            "About 20 minutes per 500 g plus 20 minutes, until the thickest part of the thigh "
            "reads 74 °C; rest it 10 minutes before carving.",
            "",
        ),
        (
            "What can I use instead of buttermilk in pancakes?",
            "Stir 1 tablespoon of lemon juice or white vinegar into 240 ml of milk and wait 5 "
            "minutes; plain yoghurt thinned with milk also works.",
            "",
        ),
        (
            "My bread comes out dense. What am I doing wrong?",
            "Usually under-proofing or too little kneading: the dough should pass the "
            "windowpane test and roughly double in size before baking.",
            "",
        ),
        (
            "How do I make a proper crème brûlée?",
            "Bake the custard (cream, yolks, sugar, vanilla) gently in a water bath at 150 °C "
            "until it just wobbles, chill it for at least 4 hours, then caramelise a thin layer "
            "of sugar right before serving.",
            "",
        ),
        (
            "Quick vegetarian dinner with chickpeas, spinach and rice?",
            "Fry onion, garlic and cumin, add the drained chickpeas and a tin of tomatoes, "
            "simmer 10 minutes, wilt in the spinach and serve over rice with yoghurt and lemon.",
            "",
        ),
        (
            "How spicy is a jalapeño compared to other chillies?",
            "Jalapeños sit around 2,500-8,000 Scoville units: milder than serrano or cayenne, "
            "much milder than habanero. Removing the seeds and white ribs tames them.",
            "",
        ),
        (
            "How do I make miso ramen (味噌ラーメン) at home?",
            "Whisk miso with a little sesame paste and hot stock, add garlic and ginger fried "
            "in sesame oil, pour over fresh noodles and top with corn, butter, spring onion "
            "and a soft-boiled egg.",
            "",
        ),
        (
            "How do I keep pasta from sticking together?",
            "Use plenty of well-salted boiling water, stir during the first two minutes, and "
            "toss the drained pasta with the sauce straight away instead of rinsing it.",
            "",
        ),
        (
            "Can I freeze cooked rice safely?",
            "Yes: cool it quickly (within an hour), freeze it flat in bags, and reheat until "
            "steaming hot. Do not leave cooked rice at room temperature for hours.",
            "",
        ),
        (
            "What's a good meal prep plan for five workdays?",
            "Cook two grains and two proteins on Sunday, roast a tray of vegetables, and make "
            "one sauce; mix them differently each day so lunches do not get boring.",
            "",
        ),
        (
            "How do I make smørrebrød like in Copenhagen?",
            "Start with thin, buttered rye bread and pile on one generous topping: pickled "
            "herring with onion, roast beef with remoulade and crispy onions, or egg and "
            "shrimp with dill.",
            "",
        ),
        (
            "Convert 350 °F to Celsius for my oven?",
            "350 °F is about 175-180 °C; for a fan oven go about 20 °C lower, so 160 °C.",
            code("python", "def f_to_c(f: float) -> float:\n    return (f - 32) * 5 / 9"),
        ),
    ),
    (
        "Taste and season at the end; salt reads differently once things have reduced.",
        "A cheap probe thermometer takes the guesswork out of meat and bread.",
        "Weigh flour rather than using cups; it makes baking far more repeatable.",
        "Resting meat lets the juices redistribute, so it stays moist when you cut it.",
        "Fresh herbs go in at the end, dried herbs at the start.",
        "If it's too salty, a splash of acid or some unsalted starch helps balance it.",
    ),
)

TRAVEL = Topic(
    "travel",
    ("Trip planning", "Japan itinerary", "Weekend in Lisbon", "Packing and jet lag"),
    (
        (
            "Plan 10 days in Japan: 東京, 京都 and 大阪?",
            "Four nights in Tokyo, three in Kyoto and two in Osaka, with a day trip to Nara; "
            "a JR Pass only pays off if you add a long trip such as Hiroshima.",
            "",
        ),
        (
            "What should I eat in Lisbon?",
            "Pastéis de nata (Manteigaria or Pastéis de Belém), bifana sandwiches, grilled "
            "sardines in June, bacalhau à brás and a ginjinha from a tiny bar in Rossio.",
            "",
        ),
        (
            "Any phrases I should learn for Marrakech?",
            "Greetings go a long way: «السلام عليكم» (as-salamu alaykum, hello), «شكرا» "
            "(shukran, thank you) and «بشحال؟» (bshhal, how much?). French is widely spoken.",
            "",
        ),
        (
            "First time in Tel Aviv, what's worth seeing?",
            "Walk the old port of Jaffa, the Carmel market, the Bauhaus White City, and the "
            "beach promenade at sunset. «שלום» (shalom) is hello and «תודה» (toda) thank you.",
            "",
        ),
        (
            "How do I beat jet lag flying west to east?",
            "Shift your sleep an hour a day for a few days before, get morning daylight at the "
            "destination, and avoid long naps on the first afternoon.",
            "",
        ),
        (
            "What should I pack for a week of hiking in Iceland in September?",
            "Layers: merino base layer, fleece, a real waterproof shell and trousers, broken-in "
            "boots, a hat and gloves. The weather changes in minutes.",
            "",
        ),
        (
            "Is a rail pass worth it for Switzerland?",
            "If you move every day or two and take mountain trains, the Swiss Travel Pass "
            "usually pays for itself; for one base and a few trips, the Half Fare Card is "
            "cheaper.",
            "",
        ),
        (
            "Budget for 5 days in Mexico City?",
            "Around 60-90 USD a day covers a good guesthouse, street food and museums; "
            "«¿Dónde está el metro?» and «la cuenta, por favor» will get you far.",
            "",
        ),
        (
            "How early should I get to the airport for an international flight?",
            "Three hours for long-haul from a big hub, two for a short international hop if "
            "you have no checked bag and have already checked in online.",
            "",
        ),
        (
            "Which São Paulo neighbourhoods are good to stay in?",
            "Pinheiros and Vila Madalena for restaurants and nightlife, Jardins for shopping "
            "and a quieter stay, Liberdade for Japanese food.",
            "",
        ),
    ),
    (
        "Book the popular museums a few days ahead; timed tickets sell out in summer.",
        "Carry a little cash for markets and small cafés.",
        "Travel insurance is worth it for anything involving flights and hiking.",
        "Offline maps save you when the roaming data runs out.",
        "Trains between city centres often beat flying once you count airport time.",
        "Check visa or ETA requirements early; some now need an online authorisation.",
    ),
)

FINANCE = Topic(
    "finance",
    ("Personal budget", "Investing basics", "Mortgage questions", "Splitting costs"),
    (
        (
            "How does the 50/30/20 budget work?",
            "50% of take-home pay to needs, 30% to wants and 20% to savings and debt "
            "repayment; treat it as a starting point, not a law.",
            "",
        ),
        (
            "How big should my emergency fund be?",
            "Three to six months of essential expenses in an easy-access savings account; "
            "more if your income is irregular.",
            "",
        ),
        (
            "Can you show compound interest in python?",
            "The balance grows by (1 + rate/n) each period; monthly compounding at 5% over 10 "
            "years turns 10,000 into about 16,470.",
            code(
                "python",
                """
def future_value(principal: float, rate: float, years: int, per_year: int = 12) -> float:
    return principal * (1 + rate / per_year) ** (years * per_year)

print(f"{future_value(10_000, 0.05, 10):,.2f}")
""",
            ),
        ),
        (
            "What's the monthly payment on a 300,000 mortgage at 4% over 25 years?",
            "About 1,583 per month with the standard annuity formula.",
            code(
                "python",
                """
def monthly_payment(principal: float, annual_rate: float, years: int) -> float:
    r = annual_rate / 12
    n = years * 12
    return principal * r / (1 - (1 + r) ** -n)

print(round(monthly_payment(300_000, 0.04, 25), 2))
""",
            ),
        ),
        (
            "Index funds or picking stocks?",
            "For most people a low-cost, broad index fund wins: fees compound against you and "
            "few stock pickers beat the index after costs. This is not personal advice.",
            "",
        ),
        (
            "Debt snowball or avalanche?",
            "Avalanche (highest interest first) saves the most money; snowball (smallest "
            "balance first) gives quicker wins. The best one is the one you stick with.",
            "",
        ),
        (
            "How do I split rent fairly when incomes differ?",
            "Split in proportion to income: if one earns 60% of the total, they pay 60% of "
            "the rent.",
            code(
                "python",
                """
incomes = {"ana": 4200, "ben": 2800}
rent = 1850
total = sum(incomes.values())
print({k: round(rent * v / total, 2) for k, v in incomes.items()})
""",
            ),
        ),
        (
            "How much is 1,200 € in dollars, pounds and yen?",
            "Rates move daily, so check a live source; at 1.08 $/€, 0.85 £/€ and 162 ¥/€ it is "
            "about $1,296, £1,020 and ¥194,400.",
            "",
        ),
        (
            "How does inflation affect my savings?",
            "At 3% inflation money loses about a quarter of its purchasing power in ten years, "
            "so cash savings should earn at least that much.",
            "",
        ),
    ),
    (
        "This is general information, not financial advice for your situation.",
        "Automating the transfer on payday makes saving much easier.",
        "Fees look small but compound over decades, so compare the total expense ratio.",
        "Keep the emergency fund separate from investments you might need to sell in a dip.",
        "A spreadsheet or a short python script makes the numbers concrete.",
    ),
)

MULTILINGUAL: tuple[tuple[str, str], ...] = (
    (
        "Peux-tu m'expliquer la différence entre une liste et un tuple en Python ?",
        "Bien sûr ! Une liste est modifiable (on peut ajouter ou retirer des éléments), un "
        "tuple est immuable. On utilise souvent un tuple pour des données fixes, comme des "
        "coordonnées, et une liste pour une collection qui évolue. Les tuples peuvent aussi "
        "servir de clés de dictionnaire.",
    ),
    (
        "¿Cuál es la mejor época para visitar Granada y la Alhambra?",
        "La primavera (abril-mayo) y el otoño (octubre) son ideales: temperaturas suaves y "
        "menos calor que en verano. Reserva las entradas de la Alhambra con semanas de "
        "antelación, sobre todo para los Palacios Nazaríes.",
    ),
    (
        "Wie viel sollte ich monatlich für die Rente sparen?",
        "Eine gängige Faustregel sind 10-15 % des Nettoeinkommens, je früher desto besser. "
        "Ein breit gestreuter ETF-Sparplan mit niedrigen Kosten ist für viele ein guter "
        "Anfang. Das ist keine Anlageberatung.",
    ),
    (
        "東京で一週間過ごすなら、どこに泊まるのがおすすめですか？",
        "初めてなら新宿か渋谷が便利です。電車のアクセスが良く、飲食店も多いです。静かに過ごしたい"
        "なら、浅草や上野周辺もおすすめです。🗼",
    ),
    (
        "请帮我写一个Python函数，计算列表的平均值。",
        "好的！可以这样写：\n\n"
        + code(
            "python",
            "def average(xs: list[float]) -> float:\n"
            "    if not xs:\n"
            '        raise ValueError("空列表没有平均值")\n'
            "    return sum(xs) / len(xs)",
        ),
    ),
    (
        "ما هي أفضل طريقة لتعلم البرمجة بلغة بايثون؟",
        "ابدأ بالأساسيات: المتغيرات والحلقات والدوال، ثم اكتب مشاريع صغيرة كل يوم. "
        "التمرين المستمر أهم من قراءة الكتب فقط. بالتوفيق! 🐍",
    ),
    (
        "מה ההבדל בין חיסכון לבין השקעה?",
        "חיסכון הוא כסף בטוח וזמין לטווח קצר, והשקעה מיועדת לטווח ארוך ויש בה סיכון. "
        "כדאי להחזיק קרן חירום לפני שמתחילים להשקיע.",
    ),
    (
        "Qual é a receita tradicional do pastel de nata?",
        "Massa folhada fina, um creme de gemas, açúcar, leite e farinha aromatizado com "
        "limão e canela, e forno muito quente (cerca de 250 °C) até caramelizar por cima. 😋",
    ),
)

# Exactly these messages carry the rare words; nothing in the banks above contains them.
RARE_PAIRS: tuple[tuple[str, str], ...] = (
    (
        "What's the last word in most English dictionaries?",
        "Usually *zyzzyva*, a genus of South American weevils. Some dictionaries end with "
        "'zyzzyvas' or 'zyzzyvae' instead.",
    ),
    (
        "Can you write a python function that checks if a word is a valid Scrabble word like "
        "zyzzyva?",
        "Load a word list into a set and test membership; it's O(1) per lookup:\n\n"
        + code(
            "python",
            'WORDS = set(open("sowpods.txt").read().split())\n\n'
            "def is_valid(word: str) -> bool:\n"
            "    return word.upper() in WORDS",
        ),
    ),
    (
        "Where can I see a quokka in Australia?",
        "Rottnest Island, a short ferry from Perth or Fremantle. Do not feed or touch them; "
        "a quokka selfie from a respectful distance is fine 📸.",
    ),
    (
        "Is the ferry to Rottnest worth it just for the animals?",
        "Yes, and the island has great snorkelling and cycling too. Quokka sightings are "
        "almost guaranteed near the settlement.",
    ),
    (
        "Which fjord should we see on a 5-day Norway trip from Bergen?",
        "The Nærøyfjord (on the 'Norway in a Nutshell' route) and the Geirangerfjord are the "
        "classics; the Sognefjord is the longest and deepest.",
    ),
    (
        "Is a fjord cruise better than driving?",
        "Do both if you can: the boat shows the fjord walls from the water, the road gives "
        "you viewpoints like Stegastein. Kayaking is magic on a calm morning.",
    ),
)

# Long answers (3-6 KB): each question maps to the sections its answer is built from.
DEEP_DIVES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "python": (
        (
            "Can you give me a complete guide to structuring a python project with tests, "
            "typing and packaging?",
            (
                "## Layout\n\nPut the package under `src/`, tests under `tests/`, and keep one "
                "`pyproject.toml` as the single source of truth for metadata, dependencies and "
                "tool settings. A `src/` layout means the tests run against the installed "
                "package, not whatever happens to be in the working directory.",
                "## Tooling\n\n- **ruff** for linting and formatting (replaces flake8, isort, "
                "black)\n- **mypy --strict** or pyright for types\n- **pytest** with `tmp_path`, "
                "parametrisation and hypothesis for property tests\n- a `Makefile` or `justfile` "
                "so `make test` and `make lint` are one command each",
                "## Typing\n\nStart strict on new code. Use `TypedDict` for JSON-shaped dicts, "
                "`Protocol` for duck typing, and `collections.abc` types for arguments "
                "(`Iterable`, `Mapping`) while returning concrete types (`list`, `dict`).",
                "## Testing\n\nName tests as sentences, keep fixtures small, and test behaviour at "
                "the public API. A test that cannot fail is worse than no test: it gives false "
                "confidence. Use real files and real processes where the bug would live.",
            ),
        ),
        (
            "Explain python's asyncio in depth: event loop, tasks, cancellation and common "
            "mistakes.",
            (
                "## asyncio basics\n\nThe event loop runs one task at a time and switches at each "
                "`await`. CPU-bound work blocks every other task, so push it to a thread or "
                "process with `asyncio.to_thread` or a `ProcessPoolExecutor`.",
                "## Cancellation\n\nCancelling a task raises `CancelledError` at its current await "
                "point. Clean up in `finally`, never swallow `CancelledError`, and prefer "
                "`asyncio.TaskGroup` (Python 3.11+) so a failing child cancels its siblings.",
                "## Common mistakes\n\n1. Calling a coroutine without awaiting it.\n2. Using "
                "`time.sleep` instead of `await asyncio.sleep`.\n3. Creating a new event loop per "
                "request.\n4. Sharing one `httpx.AsyncClient` across event loops.",
                "## Gathering safely\n\n"
                + code(
                    "python",
                    """
import asyncio

async def main() -> None:
    async with asyncio.TaskGroup() as tg:
        a = tg.create_task(asyncio.sleep(0.1, result="a"))
        b = tg.create_task(asyncio.sleep(0.2, result="b"))
    print(a.result(), b.result())

asyncio.run(main())
""",
                ),
            ),
        ),
        (
            "How should I package and publish a python library?",
            (
                "## Packaging\n\nBuild with `python -m build`, check with `twine check dist/*`, "
                "and publish from CI with trusted publishing. Pin your dev tools, but keep library "
                "dependencies as loose as you safely can.",
                "## Versioning\n\nFollow semantic versioning, keep a CHANGELOG, and tag releases "
                "in git so `pip install yourlib==1.4.2` always means the same code.",
                "## Documentation\n\nA README with install, a 10-line example and a link to the "
                "full docs answers most questions. Test the examples so they cannot drift.",
            ),
        ),
    ),
    "sql": (
        (
            "Explain SQL window functions in depth with examples of every frame type.",
            (
                "## What a window is\n\nA window function computes a value for each row from a set "
                "of related rows (its *frame*) without collapsing them the way GROUP BY does.",
                "## ROWS frames\n\n`ROWS BETWEEN 6 PRECEDING AND CURRENT ROW` counts physical "
                "rows: a 7-row moving average regardless of gaps in the dates.",
                "## RANGE frames\n\n`RANGE BETWEEN INTERVAL 6 DAYS PRECEDING AND CURRENT ROW` uses "
                "the ORDER BY value, so missing days shrink the frame instead of reaching further "
                "back.",
                "## GROUPS frames\n\n`GROUPS` counts peer groups (rows with equal ORDER BY "
                "values), useful when many rows share a timestamp.",
                "## Ranking\n\n`row_number()` is unique, `rank()` leaves gaps after ties, "
                "`dense_rank()` does not. `ntile(4)` splits rows into quartiles.",
                "## Example\n\n"
                + code(
                    "sql",
                    """
SELECT day, revenue,
       avg(revenue) OVER (ORDER BY day ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) AS ma7,
       revenue - lag(revenue) OVER (ORDER BY day) AS delta,
       rank() OVER (PARTITION BY month(day) ORDER BY revenue DESC) AS rank_in_month
FROM daily_revenue
ORDER BY day;
""",
                ),
                "## Performance\n\nEach distinct PARTITION BY / ORDER BY pair needs a sort. Reuse "
                "one named window (`WINDOW w AS (...)`) when several functions share it.",
            ),
        ),
    ),
    "cooking": (
        (
            "Give me a detailed guide to baking sourdough bread from starter to loaf.",
            (
                "## The starter\n\nFeed equal weights of flour and water daily. It is ready when "
                "it doubles within 4-8 hours of feeding and smells pleasantly sour, not like nail "
                "polish remover.",
                "## The dough\n\nFor one loaf: 500 g bread flour, 350 g water (70% hydration), "
                "100 g active starter, 10 g salt. Mix flour and water, rest 45 minutes "
                "(autolyse), then add starter and salt.",
                "## Bulk fermentation\n\nFour sets of stretch-and-folds 30 minutes apart, then "
                "leave it until it has grown about 50% and shows bubbles on the sides. At 24 °C "
                "that is roughly 4-6 hours; cooler kitchens take longer.",
                "## Shaping and cold proof\n\nPre-shape into a round, rest 20 minutes, shape "
                "tightly, and proof overnight in the fridge in a floured banneton. The cold makes "
                "it easier to score and deepens the flavour.",
                "## Baking\n\nPreheat a Dutch oven at 250 °C for 45 minutes. Bake 20 minutes with "
                "the lid on, then 20-25 minutes at 230 °C with the lid off until deep brown. Cool "
                "at least an hour before cutting.",
                "## Troubleshooting\n\n- Flat loaf: over-proofed or weak shaping.\n- Big holes "
                "under the crust: under-proofed.\n- Gummy crumb: cut too early or underbaked.\n- "
                "Pale crust: oven not hot enough or no steam.",
            ),
        ),
    ),
    "travel": (
        (
            "Build me a detailed two-week Japan itinerary with transport, costs and food.",
            (
                "## Days 1-4: 東京\n\nShinjuku for the first nights. Meiji Shrine and Harajuku, "
                "Asakusa and the Sumida river, a day for teamLab and Odaiba, and Shimokitazawa for "
                "vintage shops. Get a Suica card on your phone.",
                "## Day 5: Hakone or Nikko\n\nA day trip for hot springs and (on a clear day) a "
                "view of Mount Fuji. Leave big bags with a luggage forwarding service (takkyubin).",
                "## Days 6-9: 京都\n\nFushimi Inari at 7 am before the crowds, Arashiyama bamboo "
                "grove, Kiyomizu-dera at dusk, and a day trip to Nara for the deer and Todai-ji.",
                "## Days 10-12: 大阪 and Hiroshima\n\nDotonbori street food (takoyaki, "
                "okonomiyaki), then a shinkansen day trip to Hiroshima and Miyajima.",
                "## Transport\n\nThe JR Pass rose sharply in price; buy point-to-point shinkansen "
                "tickets unless you do several long legs. IC cards cover local trains and buses.",
                "## Costs\n\nRoughly ¥15,000-25,000 per person per day for mid-range hotels, food "
                "and transport. Convenience store breakfasts and lunch sets keep it down.",
                "## Food\n\nRamen, sushi at a standing bar, izakaya dinners, kaiseki once as a "
                "treat, and depachika food halls for picnics. Tipping is not expected.",
            ),
        ),
    ),
}

# Follow-up questions with answers that fit them, per topic.
FOLLOWUPS: dict[str, tuple[tuple[str, str], ...]] = {
    "python": (
        (
            "Thanks! Does that work on Python 3.9 too?",
            "Mostly. The built-in generic syntax `list[str]` in annotations needs 3.9+, and "
            "`X | Y` unions need 3.10+ at run time; add `from __future__ import annotations` "
            "at the top of the module and 3.9 is happy with both in annotations.",
        ),
        (
            "Nice, that worked. Can you add type hints?",
            "Sure. Annotate the arguments and the return value, and let mypy infer the "
            "locals:\n\n"
            + code(
                "python",
                "def load_totals(path: str) -> dict[str, float]:\n    ...",
            )
            + "\n\nRun `mypy --strict yourfile.py` to check it.",
        ),
        (
            "I get `TypeError: 'NoneType' object is not iterable` when I run it. Any idea?",
            "Something you loop over is `None`, most often a function that forgot to "
            "`return` its result (it then returns `None` implicitly). Print the value just "
            "before the loop, or add `assert items is not None` to find where it comes from.",
        ),
        (
            "Could you explain that line by line? I'm new to python.",
            "Of course. The first lines import what we need. The `with` block opens the file "
            "and guarantees it is closed even if an error happens. The loop visits one item "
            "at a time, and the last line prints the result with an f-string, where `{...}` "
            "inserts a value and `:.2f` formats it with two decimals.",
        ),
        (
            "Is there a faster way? My file has about 40 million rows.",
            "At that size, use a columnar engine instead of a python loop: DuckDB or polars "
            "read the file in parallel and aggregate in C++/Rust.\n\n"
            + code(
                "python",
                "import duckdb\n\nprint(duckdb.sql(\"SELECT sum(amount) FROM 'sales.csv'\")"
                ".fetchone())",
            ),
        ),
        (
            "How would I write a test for that?",
            "Put the logic in a function, then call it from a pytest test with a small, "
            "hand-made input whose answer you know:\n\n"
            + code(
                "python",
                "def test_totals_adds_amounts_per_user():\n"
                '    assert totals([("a", 1.0), ("a", 2.0)]) == {"a": 3.0}',
            ),
        ),
        (
            "What if the input is empty?",
            "Then the loop never runs and you get the initial value back (0, an empty dict, "
            "...). If an empty input is a mistake in your program, raise a `ValueError` with "
            "a clear message instead of returning a silent default.",
        ),
        (
            "Can you make it a function I can import from another module?",
            "Move it into a module, say `utils.py`, give it a name and arguments, and guard "
            'the script part with `if __name__ == "__main__":` so importing it does not '
            "run anything. Then `from utils import load_totals` works anywhere on the path.",
        ),
        (
            "Would you do this differently in production code?",
            "A little: log instead of print, validate the input at the boundary, add type "
            "hints and tests, and make failures loud with specific exceptions. The core "
            "python logic would stay the same.",
        ),
    ),
    "sql": (
        (
            "Does that work in Postgres as well?",
            "Yes, that is standard SQL and runs unchanged on Postgres. The only thing to "
            "watch is date functions: Postgres uses `date_trunc('day', ts)` and "
            "`now() - interval '7 days'`.",
        ),
        (
            "And in DuckDB?",
            "DuckDB supports it too, plus handy extras such as `QUALIFY` to filter on a "
            "window function without a subquery:\n\n"
            + code(
                "sql",
                "SELECT * FROM orders\n"
                "QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY created_at DESC)"
                " = 1;",
            ),
        ),
        (
            "The query returns duplicates now. What did I miss?",
            "A join multiplied the rows: one side has several matches per key. Check with "
            "`SELECT key, count(*) ... GROUP BY key HAVING count(*) > 1` on each side, then "
            "aggregate before joining or join on the full key.",
        ),
        (
            "How would I run this from python?",
            "With the sqlite3 module (or `duckdb`), pass values as parameters, never by "
            "string formatting:\n\n"
            + code(
                "python",
                'import sqlite3\n\ncon = sqlite3.connect("shop.db")\n'
                'rows = con.execute("SELECT * FROM orders WHERE created_at >= ?", '
                '("2026-06-01",)).fetchall()',
            ),
        ),
        (
            "It's still slow on 50M rows. Any other ideas?",
            "Pre-aggregate into a daily summary table, partition the data by month, or move "
            "the analysis to DuckDB over Parquet files, which scans only the columns and row "
            "groups it needs.",
        ),
    ),
    "bash": (
        (
            "Does that work on macOS?",
            "Mostly. macOS ships BSD versions of `sed` and `find`: use `sed -i ''` instead of "
            "`sed -i`, or install the GNU tools with Homebrew (`gsed`, `gfind`).",
        ),
        (
            "It says permission denied.",
            "Either the file isn't executable (`chmod +x script.sh`) or you don't own the "
            "folder. Check with `ls -l`; avoid `sudo` unless the files really belong to root.",
        ),
        (
            "What does the `--` mean there?",
            "It marks the end of options, so a file name that starts with `-` is not read as "
            "a flag. It is a cheap habit that prevents nasty surprises.",
        ),
        (
            "How would I do the same thing in python?",
            "With pathlib it reads almost the same:\n\n"
            + code(
                "python",
                "from pathlib import Path\n\n"
                "for p in Path('.').glob('*.jpeg'):\n    p.rename(p.with_suffix('.jpg'))",
            ),
        ),
    ),
    "cooking": (
        (
            "Can I make it the day before?",
            "Yes. Cook it fully, cool it within an hour, keep it covered in the fridge and "
            "reheat gently; most stews and curries taste even better on day two.",
        ),
        (
            "What if I don't have an oven?",
            "Use a heavy lidded pan on the stove over low heat, or an air fryer for smaller "
            "portions. Cooking times drop by about a third in an air fryer.",
        ),
        (
            "How many people does that serve?",
            "About four normal portions, or two very hungry people with leftovers for lunch.",
        ),
        (
            "Is there a vegan version?",
            "Swap butter for olive oil, cream for oat or coconut cream, and eggs for a "
            "flax egg (1 tbsp ground flax + 3 tbsp water) where they bind rather than rise.",
        ),
        (
            "Could I use olive oil instead of butter?",
            "In savoury cooking, yes, about 3/4 of the amount. In baking it changes the "
            "texture: cakes get moister and denser, and pastry won't be flaky.",
        ),
    ),
    "travel": (
        (
            "What's the weather like then?",
            "Expect mild days and cool evenings; pack a light jacket and check the forecast "
            "a week before, as spring and autumn can swing by 10 °C from day to day.",
        ),
        (
            "Is it safe to walk around at night?",
            "The central areas are generally safe; use normal city sense: stay on busy "
            "streets, keep your phone out of reach of passing scooters, and use licensed "
            "taxis or ride apps late at night.",
        ),
        (
            "How do I get from the airport to the centre?",
            "The metro or airport train is usually fastest and cheapest (30-45 minutes). A "
            "taxi is worth it with heavy luggage or after midnight; agree the price first "
            "where there is no meter.",
        ),
        (
            "We're travelling with two kids, does that change anything?",
            "Plan one big sight a day, book rooms with a kitchenette, and look for family "
            "tickets; many museums are free for children under 12.",
        ),
        (
            "Merci ! Any restaurant tips?",
            "Avec plaisir ! Eat where locals queue at lunchtime: set menus ('menu du jour', "
            "'prato do dia', 'teishoku') are the best value of the day.",
        ),
    ),
    "finance": (
        (
            "What if interest rates go up?",
            "Fixed-rate debt gets relatively cheaper, variable-rate debt more expensive, and "
            "savings accounts pay more. Bond prices fall when rates rise.",
        ),
        (
            "How would that look over 30 years?",
            "Compounding dominates over long periods: at 5% a year, 10,000 grows to about "
            "43,000 in 30 years, and more than half of that is growth on earlier growth.",
        ),
        (
            "Is that before or after tax?",
            "Before tax. Depending on the account type, gains may be taxed yearly, on "
            "withdrawal, or not at all; check the rules where you live.",
        ),
        (
            "Could you write the python for that?",
            "Here is a small table generator:\n\n"
            + code(
                "python",
                "balance = 10_000.0\nfor year in range(1, 31):\n"
                "    balance *= 1.05\n"
                '    print(f"{year:2d}  {balance:12,.2f}")',
            ),
        ),
    ),
    "support": (
        (
            "Thanks, that helps.",
            "You're welcome! I've noted it on your account.",
        ),
        (
            "Can I talk to a human?",
            "Of course. I've created a ticket and a member of the team will reply by email "
            "within one business day.",
        ),
        (
            "How long will the refund take?",
            "Refunds go back to the original payment method within 5-10 business days after "
            "we receive the item.",
        ),
        (
            "OK, and what if it doesn't arrive by Friday?",
            "Then reply here and I'll open a claim with the carrier and send a replacement "
            "at no cost.",
        ),
    ),
}

GENERIC_OPENINGS = (
    "Good question.",
    "Sure!",
    "Here's a simple way to do it.",
    "There are a couple of options.",
    "Happy to help.",
    "Let's go step by step.",
    "",
    "",
    "",
)
GENERIC_CLOSINGS = (
    "Let me know if you want a version that handles edge cases too.",
    "Hope that helps!",
    "Want me to explain any part in more detail?",
    "",
    "",
    "",
)


# --- tools used by agent sessions -----------------------------------------------------------

TOOLS: dict[str, tuple[Callable[[random.Random], JSON], Callable[[random.Random, JSON], str]]]


def _order_args(rng: random.Random) -> JSON:
    return {"order_id": f"A-{rng.randrange(10**5, 10**6)}"}


def _order_result(rng: random.Random, args: JSON) -> str:
    status = rng.choice(("shipped", "processing", "delivered", "delayed"))
    return json.dumps(
        {"order_id": args["order_id"], "status": status, "carrier": "DHL", "eta": "2 days"}
    )


def _weather_args(rng: random.Random) -> JSON:
    city = rng.choice(("Lisbon", "Kyoto", "Reykjavík", "Zürich", "Marrakech", "Tel Aviv"))
    return {"city": city, "date": "tomorrow", "units": "metric"}


def _weather_result(rng: random.Random, args: JSON) -> str:
    return json.dumps(
        {
            "city": args["city"],
            "temp_c": rng.randint(-2, 31),
            "condition": rng.choice(("sunny", "cloudy", "rain", "windy")),
            "precip_mm": round(rng.random() * 8, 1),
        },
        ensure_ascii=False,
    )


def _flight_args(rng: random.Random) -> JSON:
    a, b = rng.sample(("LIS", "HND", "KEF", "ZRH", "RAK", "TLV", "CDG", "JFK"), 2)
    return {"origin": a, "destination": b, "date": "2026-07-14", "passengers": rng.randint(1, 4)}


def _flight_result(rng: random.Random, args: JSON) -> str:
    flights = [
        {
            "flight": f"{rng.choice(('TP', 'LH', 'JL', 'FI'))}{rng.randint(100, 999)}",
            "depart": f"{rng.randint(6, 21):02d}:{rng.choice(('05', '20', '45'))}",
            "price_eur": rng.randint(89, 1200),
        }
        for _ in range(3)
    ]
    return json.dumps(
        {"origin": args["origin"], "destination": args["destination"], "results": flights}
    )


def _code_args(rng: random.Random) -> JSON:
    n = rng.randint(5, 40)
    return {"code": f"import statistics\nprint(statistics.mean(range({n})))"}


def _code_result(rng: random.Random, args: JSON) -> str:
    n = int(args["code"].split("range(")[1].split(")")[0])
    return json.dumps({"stdout": f"{(n - 1) / 2}\n", "stderr": "", "exit_code": 0})


TOOLS = {
    "lookup_order": (_order_args, _order_result),
    "get_weather": (_weather_args, _weather_result),
    "search_flights": (_flight_args, _flight_result),
    "run_python": (_code_args, _code_result),
}

AGENT_TOOLS = {
    "support-bot": ("lookup_order",),
    "travel-planner": ("get_weather", "search_flights"),
    "code-helper": ("run_python",),
}
TOOL_ASKS = {
    "lookup_order": "Where is my order {order_id}? It was supposed to arrive yesterday.",
    "get_weather": "What's the weather going to be in {city} tomorrow?",
    "search_flights": "Find me flights from {origin} to {destination} on {date}.",
    "run_python": "Can you actually run this python and tell me the result?",
}
TOOL_PREAMBLES = {
    "lookup_order": "Let me look that order up for you.",
    "get_weather": "Checking the forecast.",
    "search_flights": "Searching flights now.",
    "run_python": "I'll run it in the python sandbox.",
}

SUPPORT = Topic(
    "support",
    ("Order status", "Refund request", "Account help", "Shipping question"),
    (
        (
            "How do I reset my password?",
            "Go to Settings → Security → Reset password; the link in the email is valid for "
            "30 minutes. If it doesn't arrive, check the spam folder.",
            "",
        ),
        (
            "Can I return an item after 30 days?",
            "Our standard window is 30 days, but unopened items can be returned for store "
            "credit up to 60 days after delivery.",
            "",
        ),
        (
            "Do you ship to Canada?",
            "Yes, shipping to Canada takes 5-8 business days; duties are calculated at "
            "checkout so there are no surprises on delivery.",
            "",
        ),
        (
            "I need an invoice with my company's VAT number.",
            "You can add a VAT number under Account → Billing; every invoice issued after "
            "that includes it. I can also regenerate the last invoice for you.",
            "",
        ),
        (
            "The app crashes when I upload a photo.",
            "Sorry about that! Please update to version 4.2.1, which fixes a crash with large "
            "HEIC photos. If it still happens, send me the time of the crash.",
            "",
        ),
    ),
    (
        "Is there anything else I can help you with today?",
        "I've added a note to your account so the team can see the history.",
        "Thanks for your patience.",
    ),
)

TOPICS: dict[str, Topic] = {
    t.name: t for t in (PYTHON, SQL, BASH, COOKING, TRAVEL, FINANCE, SUPPORT)
}


# --- sessions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    user: str
    org: str
    agent: str | None
    topics: tuple[str, ...]
    turns: int
    system: str | None = None
    developer: str | None = None
    rare: tuple[int, ...] = ()
    multilingual: bool = False
    source: str = "web"
    tags: tuple[str, ...] = ()


USERS = {
    "alice": "acme",
    "bob": "acme",
    "chen": "globex",
    "dana": "globex",
    "farah": "initech",
    "goro": "initech",
}

MODELS_BY_AGENT: dict[str | None, tuple[str, ...]] = {
    None: ("gpt-4o", "claude-3-5-sonnet", "gpt-4o-mini"),
    "support-bot": ("gpt-4o-mini", "claude-3-5-haiku"),
    "code-helper": ("claude-3-5-sonnet", "gpt-4o", "o3-mini"),
    "travel-planner": ("gpt-4o", "gemini-1.5-pro"),
}

SUPPORT_SYSTEM = (
    "You are Acme's customer support assistant. Be concise and friendly. Use the "
    "lookup_order tool for any question about an order. Never promise refunds above 500 EUR "
    "without a human agent."
)
CODE_SYSTEM = (
    "You are a senior Python engineer. Answer with short explanations and runnable code "
    "blocks. Prefer the standard library. Use the run_python tool when the user asks you to "
    "execute code."
)
CODE_DEVELOPER = "Format code with ruff defaults. Mention the Python version when it matters."


def _plans(rng: random.Random) -> list[Plan]:
    """40 sessions: who, which agent, about what, and how many user turns."""
    plans = [
        Plan("alice", "acme", "support-bot", ("support",), 14, system=SUPPORT_SYSTEM),
        Plan(
            "chen",
            "globex",
            "code-helper",
            ("python", "sql"),
            34,
            system=CODE_SYSTEM,
            developer=CODE_DEVELOPER,
            rare=(1,),
        ),
        Plan("dana", "globex", "travel-planner", ("travel",), 18, rare=(4, 5)),
        Plan("goro", "initech", None, ("travel",), 16, rare=(2, 3)),
        Plan("farah", "initech", None, ("python", "cooking"), 24, multilingual=True, rare=(0,)),
        Plan("bob", "acme", None, ("finance", "python"), 22, multilingual=True),
    ]
    mixes: tuple[tuple[str, ...], ...] = (
        ("python",),
        ("python",),
        ("python", "bash"),
        ("python", "sql"),
        ("sql",),
        ("bash", "python"),
        ("cooking",),
        ("travel",),
        ("finance",),
        ("cooking", "travel"),
        ("finance", "python"),
        ("support",),
    )
    users = sorted(USERS)
    while len(plans) < 40:
        user = rng.choice(users)
        mix = rng.choice(mixes)
        if mix == ("support",):
            agent: str | None = "support-bot"
        elif "python" in mix and rng.random() < 0.45:
            agent = "code-helper"
        elif "travel" in mix and rng.random() < 0.5:
            agent = "travel-planner"
        else:
            agent = None
        turns = max(4, min(90, int(rng.lognormvariate(3.6, 0.5))))
        plans.append(
            Plan(
                user,
                USERS[user],
                agent,
                mix,
                turns,
                multilingual=rng.random() < 0.2,
                source=rng.choice(("web", "web", "desktop", "cli", "api")),
            )
        )
    return plans


def _session_start(rng: random.Random) -> datetime:
    """March to October 2026, more on weekdays, in working hours of Europe and the US."""
    start = datetime(2026, 3, 1, tzinfo=timezone.utc)
    while True:
        day = start + timedelta(days=rng.randrange(245))
        if day.weekday() >= 5 and rng.random() < 0.6:
            continue
        hour = rng.choice((7, 8, 9, 9, 10, 10, 11, 12, 13, 14, 14, 15, 16, 17, 19, 20, 21))
        return day + timedelta(
            hours=hour,
            minutes=rng.randrange(60),
            seconds=rng.randrange(60),
            microseconds=rng.randrange(10**6),
        )


@dataclass
class Writer:
    """Builds one session's messages with a clock that moves like a real chat."""

    rng: random.Random
    plan: Plan
    now: datetime
    messages: list[JSON] = field(default_factory=list)
    chars_so_far: int = 0
    model: str = ""

    def add(self, role: str, content: str | list[JSON], metadata: JSON | None = None) -> None:
        self.messages.append(
            {
                "id": None,
                "role": role,
                "content": content,
                "metadata": metadata or {},
                "created_at": iso(self.now),
            }
        )
        self.chars_so_far += len(json.dumps(content, ensure_ascii=False))

    def user(self, content: str | list[JSON]) -> None:
        # People read the answer, think and type: tens of seconds to minutes; sometimes
        # they come back after lunch or the next morning.
        if self.messages:
            gap = self.rng.lognormvariate(4.7, 0.8)
            if self.rng.random() < 0.03:
                gap += self.rng.uniform(3600, 20 * 3600)
            self.now += timedelta(seconds=gap, microseconds=self.rng.randrange(10**6))
        meta: JSON = {}
        if self.plan.source != "web" and self.rng.random() < 0.3:
            meta = {"client": self.plan.source}
        self.add("user", content, meta)

    def assistant(self, content: str | list[JSON]) -> None:
        text = content if isinstance(content, str) else json.dumps(content)
        output = max(1, len(text) // 4)
        latency = int(350 + output * self.rng.uniform(9, 22))
        self.now += timedelta(milliseconds=latency, microseconds=self.rng.randrange(1000))
        # One model per session, with the odd switch half-way, as people do in chat apps.
        if not self.model or self.rng.random() < 0.01:
            self.model = self.rng.choice(MODELS_BY_AGENT[self.plan.agent])
        meta = {
            "model": self.model,
            "tokens": {"input": 40 + self.chars_so_far // 4, "output": output},
            "latency_ms": latency,
        }
        if self.rng.random() < 0.1:
            meta["finish_reason"] = "stop"
        self.add("assistant", content, meta)

    def tool(self, call_id: str, result: str) -> None:
        self.now += timedelta(milliseconds=self.rng.randint(120, 2400))
        part = {"type": "tool_result", "tool_call_id": call_id, "content": result}
        self.add("tool", [part], {})


SIGN_OFFS = {"cooking": "Bon appétit! 🍽️", "travel": "Bon voyage! ✈️", "python": "Happy hacking 🐍"}


def _answer(rng: random.Random, topic: Topic, item: tuple[str, str, str], long: bool) -> str:
    _, explanation, snippet = item
    parts = [rng.choice(GENERIC_OPENINGS), explanation]
    if snippet:
        parts.append(snippet)
    parts.extend(rng.sample(topic.sentences, k=min(len(topic.sentences), rng.randint(1, 3))))
    if long:
        parts.extend(s for s in topic.sentences if s not in parts)
    if topic.name in SIGN_OFFS and rng.random() < 0.15:
        parts.append(SIGN_OFFS[topic.name])
    else:
        parts.append(rng.choice(GENERIC_CLOSINGS))
    return "\n\n".join(p for p in parts if p)


def _deep_dive(rng: random.Random, topic: Topic, question: str, sections: Sequence[str]) -> str:
    """A 3-6 KB markdown answer: several sections, lists and code blocks."""
    body = [f"# {question.rstrip('?.')}", "Here is a thorough walk-through.", *sections]
    extras = rng.sample(topic.items, k=len(topic.items))
    while len("\n\n".join(body).encode()) < 3200 and extras:
        q, explanation, snippet = extras.pop()
        body.append(f"### {q}\n\n{explanation}" + (f"\n\n{snippet}" if snippet else ""))
    body.append("## Summary\n\n" + " ".join(rng.sample(topic.sentences, k=3)))
    return "\n\n".join(body)


def _followup_answer(rng: random.Random, topic: Topic, answer: str) -> str:
    extra = rng.choice(topic.sentences) if rng.random() < 0.5 else ""
    return f"{answer}\n\n{extra}" if extra else answer


def _tool_turn(w: Writer, rng: random.Random, tool: str) -> None:
    make_args, make_result = TOOLS[tool]
    args = make_args(rng)
    w.user(
        TOOL_ASKS[tool].format(**args)
        if tool != "run_python"
        else TOOL_ASKS[tool] + "\n\n" + code("python", args["code"])
    )
    call_id = f"call_{rng.getrandbits(64):016x}"
    w.assistant(
        [
            {"type": "text", "text": TOOL_PREAMBLES[tool]},
            {"type": "tool_call", "id": call_id, "name": tool, "arguments": args},
        ]
    )
    result = make_result(rng, args)
    w.tool(call_id, result)
    data = json.loads(result)
    if tool == "lookup_order":
        reply = (
            f"Your order {data['order_id']} is **{data['status']}** with {data['carrier']}; "
            f"the estimated delivery is in {data['eta']}."
        )
    elif tool == "get_weather":
        reply = (
            f"Tomorrow in {data['city']}: {data['temp_c']} °C and {data['condition']}, "
            f"with {data['precip_mm']} mm of rain expected."
        )
    elif tool == "search_flights":
        best = min(data["results"], key=lambda f: f["price_eur"])
        reply = (
            f"I found {len(data['results'])} options. The cheapest is {best['flight']} at "
            f"{best['depart']} for {best['price_eur']} €."
        )
    else:
        reply = f"It prints `{data['stdout'].strip()}` and exits with status {data['exit_code']}."
    w.assistant(reply)


IMAGE_TURNS: dict[str, tuple[tuple[str, str], ...]] = {
    "cooking": (
        (
            "Is this dough proofed enough?",
            "It looks close: the surface is domed and bubbly, but it hasn't quite doubled. "
            "Give it another 30-45 minutes and do the poke test: a dent that springs back "
            "slowly means it's ready.",
        ),
        (
            "What went wrong with this cake?",
            "The sunken middle suggests it was underbaked or the oven door was opened too "
            "early. Bake 5-10 minutes longer and test with a skewer.",
        ),
    ),
    "travel": (
        (
            "Where was this photo taken, do you think?",
            "The blue-and-white azulejo tiles and the yellow tram strongly suggest Lisbon, "
            "probably the Alfama district near Miradouro de Santa Luzia.",
        ),
    ),
    "python": (
        (
            "Why does my plot look like this?",
            "The x-axis labels overlap because every date gets a tick. Use "
            "`fig.autofmt_xdate()` or a `matplotlib.dates.AutoDateLocator` so matplotlib "
            "picks fewer ticks.",
        ),
        (
            "Here's a screenshot of the traceback, what does it mean?",
            "The last line is the real error: `KeyError: 'amount'`. One row in your CSV has "
            "no `amount` column, probably a header typo. Print `row.keys()` for the first row.",
        ),
    ),
    "finance": (
        (
            "Can you read the numbers on this receipt?",
            "I can read a subtotal of 84.20 €, VAT of 16.00 € and a total of 100.20 €. "
            "The line items are a bit blurry; a straighter photo would help.",
        ),
    ),
}
DEFAULT_IMAGE_TURN = (
    "What's wrong in this screenshot?",
    "The error banner says the session expired. Log out and back in; if it persists, "
    "clear the site data in your browser settings.",
)


def _image_turn(w: Writer, rng: random.Random, topic: Topic) -> None:
    ask, answer = rng.choice(IMAGE_TURNS.get(topic.name, (DEFAULT_IMAGE_TURN,)))
    n = rng.randrange(1000, 9999)
    image: JSON = {"type": "image", "url": f"https://files.example.com/u/{n}.jpg"}
    if rng.random() < 0.7:
        image["mime_type"] = "image/jpeg"
    w.user([{"type": "text", "text": ask}, image])
    w.assistant(answer)


def _session(rng: random.Random, plan: Plan) -> JSON:
    """One session; its id is set once all sessions are sorted by creation time."""
    topics = [TOPICS[t] for t in plan.topics]
    start = _session_start(rng)
    w = Writer(rng, plan, start)
    if plan.system:
        w.add("system", plan.system)
    if plan.developer:
        w.add("developer", plan.developer)
    queues = {t.name: rng.sample(t.items, k=len(t.items)) for t in topics}
    tools = AGENT_TOOLS.get(plan.agent or "", ())
    deep_left = 1 if any(t.name in DEEP_DIVES for t in topics) and rng.random() < 0.3 else 0
    rare = [RARE_PAIRS[i] for i in plan.rare]
    rare_at = sorted(rng.sample(range(2, max(3, plan.turns - 1)), k=len(rare))) if rare else []
    multi = list(rng.sample(MULTILINGUAL, k=2)) if plan.multilingual else []
    for turn in range(plan.turns):
        topic = topics[0] if turn == 0 else rng.choice(topics)
        if rare_at and turn == rare_at[0]:
            rare_at.pop(0)
            q, a = rare.pop(0)
            w.user(q)
            w.assistant(a)
            continue
        r = rng.random()
        if turn > 0 and tools and r < 0.22:
            _tool_turn(w, rng, rng.choice(tools))
        elif turn > 0 and r < 0.05:
            _image_turn(w, rng, topic)
        elif turn > 0 and multi and r < 0.12:
            q, a = multi.pop()
            w.user(q)
            w.assistant(a)
        elif turn > 0 and deep_left and topic.name in DEEP_DIVES and r < 0.2:
            deep_left -= 1
            q, sections = rng.choice(DEEP_DIVES[topic.name])
            w.user(q)
            w.assistant(_deep_dive(rng, topic, q, sections))
        elif turn > 0 and r < 0.45:
            q, a = rng.choice(FOLLOWUPS[topic.name])
            w.user(q)
            answer = _followup_answer(rng, topic, a)
            if rng.random() < 0.15:
                w.assistant([{"type": "text", "text": answer}])
            else:
                w.assistant(answer)
        else:
            queue = queues[topic.name]
            if not queue:
                queue.extend(rng.sample(topic.items, k=len(topic.items)))
            item = queue.pop()
            w.user(item[0])
            w.assistant(_answer(rng, topic, item, long=rng.random() < 0.1))
    title = rng.choice(topics[0].titles)
    metadata: JSON = {"source": plan.source, "tags": sorted({t.name for t in topics})}
    if plan.agent:
        metadata["agent_version"] = f"1.{rng.randint(0, 9)}.{rng.randint(0, 20)}"
    if rng.random() < 0.3:
        metadata["pinned"] = True
    return {
        "id": "",
        "title": title,
        "user_id": plan.user,
        "org_id": plan.org,
        "agent_id": plan.agent,
        "metadata": metadata,
        "created_at": w.messages[0]["created_at"],
        "parent": None,
        "messages": w.messages,
    }


def build_sessions(rng: random.Random) -> list[JSON]:
    plans = _plans(rng)
    sessions = [_session(rng, p) for p in plans]
    # Number sessions in creation order, as an export would list them.
    sessions.sort(key=lambda s: s["created_at"])
    for i, s in enumerate(sessions, 1):
        s["id"] = f"s-{i:04d}"
    return sessions


def dump_export(sessions: Sequence[JSON]) -> str:
    """The export with one message per line: valid JSON that diffs and greps well."""
    out = [
        '{"format": "convstore-export", "version": 1, '
        f'"exported_at": {json.dumps(EXPORTED_AT)},\n "sessions": [\n'
    ]
    for i, s in enumerate(sessions):
        head = {k: v for k, v in s.items() if k != "messages"}
        out.append("  " + json.dumps(head, ensure_ascii=False)[:-1] + ', "messages": [\n')
        out.append(",\n".join("   " + json.dumps(m, ensure_ascii=False) for m in s["messages"]))
        out.append("\n  ]}" + ("," if i < len(sessions) - 1 else "") + "\n")
    out.append(" ]}\n")
    return "".join(out)


# --- ChatGPT export -------------------------------------------------------------------------


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _epoch(ts: datetime) -> float:
    return round(ts.timestamp(), 6)


class ChatGPTTree:
    """Builds one conversation's ``mapping`` the way ChatGPT exports it."""

    def __init__(self, rng: random.Random, root_id: str) -> None:
        self.rng = rng
        self.mapping: dict[str, JSON] = {
            root_id: {"id": root_id, "message": None, "parent": None, "children": []}
        }

    def add(
        self,
        parent: str,
        role: str,
        content: JSON,
        at: datetime | None,
        *,
        metadata: JSON | None = None,
        recipient: str = "all",
        name: str | None = None,
        end_turn: bool | None = None,
    ) -> str:
        node_id = _uuid(self.rng)
        message: JSON = {
            "id": node_id,
            "author": {"role": role, "name": name, "metadata": {}},
            "create_time": None if at is None else _epoch(at),
            "update_time": None,
            "content": content,
            "status": "finished_successfully",
            "end_turn": end_turn,
            "weight": 1.0,
            "metadata": metadata if metadata is not None else {},
            "recipient": recipient,
            "channel": None,
        }
        self.mapping[node_id] = {
            "id": node_id,
            "message": message,
            "parent": parent,
            "children": [],
        }
        self.mapping[parent]["children"].append(node_id)
        return node_id


def _text(*parts: str) -> JSON:
    return {"content_type": "text", "parts": list(parts)}


def _assistant_meta(model: str, parent: str) -> JSON:
    return {
        "finish_details": {"type": "stop", "stop_tokens": [200002]},
        "model_slug": model,
        "default_model_slug": model,
        "parent_id": parent,
        "request_id": "9a1b2c3d4e5f6a7b-LIS",
        "timestamp_": "absolute",
    }


def _conversation(
    rng: random.Random,
    title: str,
    tree: ChatGPTTree,
    current: str,
    created: datetime,
    updated: datetime | None,
    model: str,
) -> JSON:
    conv_id = _uuid(rng)
    return {
        "title": title,
        "create_time": _epoch(created),
        "update_time": None if updated is None else _epoch(updated),
        "mapping": tree.mapping,
        "moderation_results": [],
        "current_node": current,
        "plugin_ids": None,
        "conversation_id": conv_id,
        "conversation_template_id": None,
        "gizmo_id": None,
        "gizmo_type": None,
        "is_archived": False,
        "is_starred": None,
        "safe_urls": [],
        "blocked_urls": [],
        "default_model_slug": model,
        "conversation_origin": None,
        "voice": None,
        "async_status": None,
        "disabled_tool_ids": [],
        "id": conv_id,
    }


def build_chatgpt(rng: random.Random) -> list[JSON]:
    convs: list[JSON] = []

    # 1. A hidden system node, a regenerated reply (two children; current_node follows the
    #    second), and a visible message whose create_time is null.
    t0 = datetime(2026, 4, 12, 18, 2, 11, 418000, tzinfo=timezone.utc)
    tree = ChatGPTTree(rng, "client-created-root")
    sys_node = tree.add(
        "client-created-root",
        "system",
        _text(""),
        None,
        metadata={"is_visually_hidden_from_conversation": True},
    )
    u1 = tree.add(
        sys_node,
        "user",
        _text("Give me a quick vegetarian dinner idea with chickpeas."),
        t0,
        metadata={"request_id": "8f1e-LIS", "message_source": None},
    )
    tree.add(
        u1,
        "assistant",
        _text("Try a chickpea and spinach curry: onion, garlic, cumin, tomatoes, 20 minutes."),
        t0 + timedelta(seconds=4.2),
        metadata=_assistant_meta("gpt-4o", u1),
        end_turn=True,
    )
    a1b = tree.add(
        u1,
        "assistant",
        _text(
            "**Crispy chickpea tacos** 🌮\n\n1. Roast chickpeas with smoked paprika at "
            "220 °C for 20 min.\n2. Warm tortillas, add slaw and lime yoghurt.\n3. Top with "
            "jalapeño and coriander."
        ),
        t0 + timedelta(seconds=31.7),
        metadata=_assistant_meta("gpt-4o", u1),
        end_turn=True,
    )
    u2 = tree.add(a1b, "user", _text("Nice. Can I make the slaw the day before?"), None)
    a2 = tree.add(
        u2,
        "assistant",
        _text("Yes — keep the dressing separate and mix it in just before serving."),
        t0 + timedelta(minutes=2, seconds=9.5),
        metadata=_assistant_meta("gpt-4o", u2),
        end_turn=True,
    )
    convs.append(
        _conversation(
            rng,
            "Chickpea dinner ideas",
            tree,
            a2,
            t0,
            t0 + timedelta(minutes=2, seconds=10),
            "gpt-4o",
        )
    )

    # 2. An image upload (multimodal_text with an asset pointer), a code node sent to the
    #    python tool, the tool's output (role "tool"), and the answer.
    t1 = datetime(2026, 6, 3, 9, 40, 5, 2000, tzinfo=timezone.utc)
    root = _uuid(rng)
    tree = ChatGPTTree(rng, root)
    u1 = tree.add(
        root,
        "user",
        {
            "content_type": "multimodal_text",
            "parts": [
                {
                    "content_type": "image_asset_pointer",
                    "asset_pointer": "file-service://file-7QmZkq3N2bXcVd1s9TfA4e",
                    "size_bytes": 184223,
                    "width": 1024,
                    "height": 768,
                    "fovea": None,
                    "metadata": {
                        "dalle": None,
                        "gizmo": None,
                        "sanitized": True,
                        "asset_pointer_link": None,
                        "watermarked_asset_pointer": None,
                    },
                },
                "Here is a chart of my monthly spending. What's the average per month?",
            ],
        },
        t1,
        metadata={
            "attachments": [
                {
                    "id": "file-7QmZkq3N2bXcVd1s9TfA4e",
                    "name": "spending.png",
                    "size": 184223,
                    "mime_type": "image/png",
                    "width": 1024,
                    "height": 768,
                }
            ]
        },
    )
    c1 = tree.add(
        u1,
        "assistant",
        {
            "content_type": "code",
            "language": "unknown",
            "response_format_name": None,
            "text": "import statistics\nmonthly = [1840, 2105, 1760, 1995, 2230, 1870]\n"
            "print(round(statistics.mean(monthly), 2))",
        },
        t1 + timedelta(seconds=6.1),
        metadata=_assistant_meta("gpt-4o", u1),
        recipient="python",
    )
    tool = tree.add(
        c1,
        "tool",
        {"content_type": "execution_output", "text": "1966.67"},
        t1 + timedelta(seconds=7.4),
        metadata={
            "is_complete": True,
            "aggregate_result": {"status": "success", "run_id": _uuid(rng), "code": "..."},
        },
        name="python",
    )
    a1 = tree.add(
        tool,
        "assistant",
        _text(
            "Reading the six bars (January to June), your average is **≈ 1,966.67 € per "
            "month**. May is the highest at 2,230 €."
        ),
        t1 + timedelta(seconds=12.9),
        metadata=_assistant_meta("gpt-4o", tool),
        end_turn=True,
    )
    convs.append(
        _conversation(
            rng, "Average monthly spending", tree, a1, t1, t1 + timedelta(seconds=13), "gpt-4o"
        )
    )

    # 3. A reasoning model: a thoughts node and a reasoning_recap before the answer, and a
    #    memory tool call whose result is a plain text tool message.
    t2 = datetime(2026, 8, 21, 22, 15, 48, 731000, tzinfo=timezone.utc)
    root = _uuid(rng)
    tree = ChatGPTTree(rng, root)
    u1 = tree.add(
        root,
        "user",
        _text("Is 2,147,483,647 prime? Also remember that I prefer answers in python."),
        t2,
    )
    th = tree.add(
        u1,
        "assistant",
        {
            "content_type": "thoughts",
            "thoughts": [
                {
                    "summary": "Recognising the number",
                    "content": "2,147,483,647 is 2^31 - 1, a Mersenne number; Euler proved "
                    "it prime in 1772.",
                    "chunks": [],
                    "finished": True,
                },
                {
                    "summary": "Planning a check in python",
                    "content": "Trial division up to the square root (about 46,341) is fast "
                    "enough to show in code.",
                    "chunks": [],
                    "finished": True,
                },
            ],
            "source_analysis_msg_id": _uuid(rng),
        },
        t2 + timedelta(seconds=3.3),
        metadata={"reasoning_status": "is_reasoning", "model_slug": "o3"},
    )
    recap = tree.add(
        th,
        "assistant",
        {"content_type": "reasoning_recap", "content": "Thought for 9 seconds"},
        t2 + timedelta(seconds=9.0),
        metadata={"reasoning_status": "reasoning_ended", "model_slug": "o3"},
    )
    bio = tree.add(
        recap,
        "assistant",
        _text("User prefers answers with python code."),
        t2 + timedelta(seconds=9.4),
        metadata=_assistant_meta("o3", recap),
        recipient="bio",
    )
    bio_result = tree.add(
        bio,
        "tool",
        _text("Model set context updated."),
        t2 + timedelta(seconds=9.6),
        name="bio",
    )
    a1 = tree.add(
        bio_result,
        "assistant",
        _text(
            "Yes. 2,147,483,647 = 2³¹ − 1 is a Mersenne prime. A quick check:\n\n"
            + code(
                "python",
                "n = 2**31 - 1\nprint(all(n % d for d in range(3, int(n**0.5) + 1, 2)))",
            )
            + "\n\nI'll keep answering with python from now on."
        ),
        t2 + timedelta(seconds=14.2),
        metadata=_assistant_meta("o3", bio_result),
        end_turn=True,
    )
    convs.append(_conversation(rng, "Is 2^31-1 prime?", tree, a1, t2, None, "o3"))

    # 4. A plain exchange that continues a day later.
    t3 = datetime(2026, 9, 30, 7, 5, 0, 250000, tzinfo=timezone.utc)
    root = _uuid(rng)
    tree = ChatGPTTree(rng, root)
    u1 = tree.add(
        root, "user", _text("Best time of year to see the northern lights in Tromsø?"), t3
    )
    a1 = tree.add(
        u1,
        "assistant",
        _text("Late September to late March, on clear nights away from city lights."),
        t3 + timedelta(seconds=3),
        metadata=_assistant_meta("gpt-4o-mini", u1),
        end_turn=True,
    )
    u2 = tree.add(a1, "user", _text("And how cold is it in January?"), t3 + timedelta(days=1))
    a2 = tree.add(
        u2,
        "assistant",
        _text("Around −4 °C on average, colder inland. Thermal layers and good boots help."),
        t3 + timedelta(days=1, seconds=4),
        metadata=_assistant_meta("gpt-4o-mini", u2),
        end_turn=True,
    )
    convs.append(
        _conversation(
            rng,
            "Northern lights trip",
            tree,
            a2,
            t3,
            t3 + timedelta(days=1, seconds=5),
            "gpt-4o-mini",
        )
    )
    # Newest first, as ChatGPT lists them.
    convs.sort(key=lambda c: c["update_time"] or c["create_time"], reverse=True)
    return convs


# --- Claude export --------------------------------------------------------------------------


def build_claude(rng: random.Random) -> list[JSON]:
    account = {"uuid": _uuid(rng)}
    convs: list[JSON] = []

    def message(sender: str, at: datetime, text: str, content: list[JSON], **extra: Any) -> JSON:
        msg: JSON = {
            "uuid": _uuid(rng),
            "text": text,
            "content": content,
            "sender": sender,
            "created_at": iso(at),
            "updated_at": iso(at),
            "attachments": [],
            "files": [],
        }
        msg.update(extra)
        return msg

    def text_block(at: datetime, text: str) -> JSON:
        return {
            "start_timestamp": iso(at),
            "stop_timestamp": iso(at + timedelta(seconds=2)),
            "type": "text",
            "text": text,
            "citations": [],
        }

    # 1. A thinking block before the answer.
    t0 = datetime(2026, 5, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)
    q = "Why is my python script using 8 GB of RAM when reading a 2 GB CSV?"
    thinking = (
        "The user loads a CSV, probably with pandas.read_csv. Object dtype strings cost far "
        "more than their bytes on disk. Suggest dtype, usecols, chunksize, or pyarrow."
    )
    answer = (
        "pandas stores text columns as Python objects, which can take 3-5x the file size. "
        "Three fixes:\n\n1. `usecols=` to load only what you need\n2. `dtype_backend="
        "'pyarrow'` (pandas 2.x) for compact strings\n3. `chunksize=` to stream it\n\n"
        + code(
            "python",
            'import pandas as pd\n\ndf = pd.read_csv("big.csv", usecols=["id", "amount"], '
            'dtype_backend="pyarrow")',
        )
    )
    a_at = t0 + timedelta(seconds=12.5)
    convs.append(
        {
            "uuid": _uuid(rng),
            "name": "Python memory with large CSV",
            "created_at": iso(t0),
            "updated_at": iso(a_at),
            "account": account,
            "chat_messages": [
                message("human", t0, q, [text_block(t0, q)]),
                message(
                    "assistant",
                    a_at,
                    answer,
                    [
                        {
                            "start_timestamp": iso(t0 + timedelta(seconds=1)),
                            "stop_timestamp": iso(t0 + timedelta(seconds=6)),
                            "type": "thinking",
                            "thinking": thinking,
                            "summaries": [{"summary": "Diagnosing pandas memory use."}],
                            "cut_off": False,
                        },
                        text_block(t0 + timedelta(seconds=6), answer),
                    ],
                ),
            ],
        }
    )

    # 2. A message with empty text (only an attachment), then a normal exchange.
    t1 = datetime(2026, 7, 9, 15, 30, 45, 900001, tzinfo=timezone.utc)
    notes = "Day 1: Lisboa, Alfama\nDay 2: Sintra\nDay 3: Porto by train\nDay 4: Douro valley"
    r1 = "Nice plan! Day 3 is tight: the train to Porto takes about 3 hours, so leave early."
    q2 = "Should we book the train in advance?"
    r2 = "Yes, for the Alfa Pendular: advance fares are up to 50% cheaper and seats sell out."
    convs.append(
        {
            "uuid": _uuid(rng),
            "name": "Portugal itinerary review",
            "created_at": iso(t1),
            "updated_at": iso(t1 + timedelta(minutes=3)),
            "account": account,
            "chat_messages": [
                message(
                    "human",
                    t1,
                    "",
                    [],
                    attachments=[
                        {
                            "file_name": "itinerary.txt",
                            "file_size": len(notes.encode()),
                            "file_type": "text/plain",
                            "extracted_content": notes,
                        }
                    ],
                ),
                message(
                    "assistant",
                    t1 + timedelta(seconds=5),
                    r1,
                    [text_block(t1 + timedelta(seconds=1), r1)],
                ),
                message(
                    "human",
                    t1 + timedelta(minutes=2),
                    q2,
                    [text_block(t1 + timedelta(minutes=2), q2)],
                ),
                message(
                    "assistant",
                    t1 + timedelta(minutes=2, seconds=4),
                    r2,
                    [text_block(t1 + timedelta(minutes=2), r2)],
                ),
            ],
        }
    )

    # 3. Unicode and a longer back-and-forth.
    t2 = datetime(2026, 10, 2, 20, 11, 3, 5, tzinfo=timezone.utc)
    turns = (
        ("human", "Traduis « bonne nuit » en japonais, arabe et hébreu, s'il te plaît."),
        ("assistant", "おやすみなさい (oyasuminasai) · تصبح على خير · לילה טוב 🌙"),
        ("human", "Merci ! Et en chinois ?"),
        ("assistant", "晚安 (wǎn'ān)."),
    )
    msgs = []
    at = t2
    for sender, text in turns:
        msgs.append(message(sender, at, text, [text_block(at, text)]))
        at += timedelta(seconds=rng.randint(5, 90), microseconds=rng.randrange(10**6))
    convs.append(
        {
            "uuid": _uuid(rng),
            "name": "Bonne nuit en plusieurs langues",
            "created_at": iso(t2),
            "updated_at": msgs[-1]["updated_at"],
            "account": account,
            "chat_messages": msgs,
        }
    )
    return convs


# --- main -----------------------------------------------------------------------------------


def _all_text(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _all_text(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _all_text(v)


def main() -> None:
    rng = random.Random(SEED)
    sessions = build_sessions(rng)
    export = dump_export(sessions)
    json.loads(export)  # the hand-laid layout must still be valid JSON
    (HERE / "sessions.json").write_text(export, encoding="utf-8", newline="\n")

    def dump(name: str, data: Any) -> None:
        text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
        (HERE / name).write_text(text, encoding="utf-8", newline="\n")

    dump("chatgpt_conversations.json", build_chatgpt(random.Random(SEED + 1)))
    dump("claude_conversations.json", build_claude(random.Random(SEED + 2)))

    msgs = [m for s in sessions for m in s["messages"]]
    texts = [" ".join(_all_text(m["content"])).lower() for m in msgs]
    long = sum(len(json.dumps(m["content"], ensure_ascii=False).encode()) > 3000 for m in msgs)
    print(f"sessions.json: {len(sessions)} sessions, {len(msgs)} messages, {len(export):,} chars")
    print(f"  {long} messages over 3 KB")
    for word in (*RARE_WORDS, "python"):
        as_word = sum(bool(re.search(rf"\b{word}\b", t)) for t in texts)
        inside = sum(word in t for t in texts)
        print(f"  {word!r} as a word in {as_word} messages, as a substring in {inside}")


if __name__ == "__main__":
    main()
