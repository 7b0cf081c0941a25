"""The operator's view, in a real browser: Playwright driving Debian's chromium against
`hector-sync demo --ui`, clicking where an operator clicks.

Screenshots land in test-artifacts/browser/ (the docs/ pictures are copies of them). Without
/usr/bin/chromium these tests skip on a workstation and fail in CI, which installs it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from hector_sync.config import SyncConfig, load_config
from hector_sync_tests.conftest import demo_credentials
from hector_sync_tests.console import DemoUi, demo_ui, hector_sync, wait_for_run
from hector_sync_tests.systems import c2_cis, hector_state, patch_ci, refs, writes

CHROMIUM = Path("/usr/bin/chromium")
# As root, in a sandbox with no way out: no sandbox, no GPU, and no calls home (they would be
# refused many at a time and slow every page).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# The UI renders a page in a few seconds on 2 busy cores; a missing element still fails in 20 s.
expect.set_options(timeout=20_000)
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
ASSETS = ["category_catalog", "c2_cmdb_snapshot", "hector_inventory_snapshot", "desired_hector_models", "desired_c2_cis",
          "hector_change_set", "c2_change_set", "hector_writeback", "c2_writeback"]
LINEAGE = {
    ("category_catalog", "c2_cmdb_snapshot"), ("category_catalog", "hector_inventory_snapshot"),
    ("c2_cmdb_snapshot", "desired_hector_models"), ("desired_hector_models", "hector_change_set"),
    ("hector_inventory_snapshot", "hector_change_set"), ("hector_change_set", "hector_writeback"),
    ("hector_inventory_snapshot", "desired_c2_cis"), ("desired_c2_cis", "c2_change_set"),
    ("c2_cmdb_snapshot", "c2_change_set"), ("c2_change_set", "c2_writeback"),
}
GROUPS = ["catalog", "c2_itsm", "hector", "derived", "change_sets", "writeback"]
NEW_SERIAL = {"printers": "SN-UI-PRINTER-0001", "laptops": "SN-UI-LAPTOP-0001"}
HECTOR_CATEGORY = {"printers": "Printers", "laptops": "Laptops", "monitors": "Monitors"}

# Where each drawn lineage edge starts and ends, in page coordinates: the graph is SVG.
EDGE_ENDS = """() => [...document.querySelectorAll('path[stroke="var(--color-lineage-edge)"]')].map(p => {
    const m = p.getScreenCTM(), n = p.getTotalLength();
    const at = l => { const q = p.getPointAtLength(l); return new DOMPoint(q.x, q.y).matrixTransform(m); };
    const a = at(0), b = at(n);
    return [a.x, a.y, b.x, b.y];
})"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (Debian package chromium; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoUi]:
    with demo_ui(tmp_path_factory.mktemp("demo")) as running:
        yield running


@pytest.fixture
def page(chromium: Browser, demo: DemoUi) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 2560, "height": 1440}, base_url=demo.url)
    context.set_default_timeout(30_000)
    # Dagster's one-time invitation to its community, as dismissed by its Skip button: it pops up
    # a second after the first page loads and would cover whatever is clicked next.
    context.add_init_script(f"window.localStorage.setItem('communityNux', {json.dumps(json.dumps('1'))})")
    yield context.new_page()
    context.close()


@pytest.fixture
def demo_config(demo: DemoUi, monkeypatch: pytest.MonkeyPatch) -> SyncConfig:
    """The configuration the demo runs, to look at its simulators as an operator's script would."""
    demo_credentials(monkeypatch)
    return load_config(demo.config)


def open_page(page: Page, path: str) -> None:
    """Go to `path` (Dagster's invitation to its community is dismissed by the `page` fixture)."""
    page.goto(path)


def node_boxes(page: Page) -> dict[str, dict[str, float]]:
    """Each asset node's box on the page, by the asset name it shows."""
    boxes = {}
    for name in ASSETS:
        node = page.locator("foreignObject:not(.group)").filter(
            has=page.get_by_text(name, exact=True)).first
        box = node.bounding_box()
        assert box is not None, f"asset {name} is not drawn"
        boxes[name] = box
    return boxes


def owner(boxes: dict[str, dict[str, float]], x: float, y: float, slack: float = 24) -> str | None:
    for name, b in boxes.items():
        if b["x"] - slack <= x <= b["x"] + b["width"] + slack and b["y"] - slack <= y <= b["y"] + b["height"] + slack:
            return name
    return None


def test_the_asset_graph_lists_every_asset_and_the_lineage_between_them(page: Page) -> None:
    open_page(page, "/asset-groups")
    for group in GROUPS:  # the stages, in the order the sync runs
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    collapsed = page.locator("[class*=CollapsedGroupNode_collapsedGroupNodeBox]")
    for _ in GROUPS:  # open each stage as an operator does, by clicking it
        if collapsed.count() == 0:
            break
        collapsed.first.dispatch_event("click")
        page.wait_for_timeout(300)
    assert collapsed.count() == 0, "a stage of the graph stayed closed"
    page.reload()  # the opened stages are remembered; the graph is laid out and fitted anew
    for name in ASSETS:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    page.wait_for_timeout(1_000)

    boxes = node_boxes(page)
    edges = {(owner(boxes, x1, y1), owner(boxes, x2, y2)) for x1, y1, x2, y2 in page.evaluate(EDGE_ENDS)}
    assert edges == LINEAGE, f"edges drawn: {sorted(map(str, edges))}"
    assert all(boxes[a]["x"] < boxes[b]["x"] for a, b in LINEAGE), "the graph does not read left to right"
    page.screenshot(path=ARTIFACTS / "asset-graph.png")

    # the guard and the mapping's validity are checks on each change set
    open_page(page, "/assets/hector_change_set?view=checks")
    for check in ("mapping_valid", "unique_ci_ids", "change_size_guard"):
        expect(page.get_by_text(check, exact=True).first).to_be_visible()
    page.screenshot(path=ARTIFACTS / "change-set-checks.png")


def test_a_change_set_partition_shows_its_changes_its_skipped_cis_and_the_other_categories(page: Page) -> None:
    open_page(page, "/assets/hector_change_set?view=partitions&partition=laptops")
    expect(page.get_by_text("items_create_asset", exact=True)).to_be_visible()
    # the CIs left alone, each with why, straight on the page
    skipped = metadata_value(page, "skipped_preview")
    expect(skipped.get_by_role("columnheader")).to_have_text(["item", "field", "value", "reason"])
    expect(skipped.get_by_text("Manufacturer is empty, and Hector needs a maker for the model")).to_be_visible()
    expect(skipped.get_by_text(re.compile(r"identify_by value .* matches several unlinked assets"))).to_be_visible()
    skipped.scroll_into_view_if_needed()  # below the first changes, which the page shows first
    page.screenshot(path=ARTIFACTS / "laptops-change-set.png")
    # the first changes, field by field with old → new, as a table on the same page
    changes = metadata_value(page, "changes_preview")
    expect(changes.get_by_role("columnheader")).to_have_text(["action", "item", "target", "change", "reason"])
    expect(changes.get_by_role("cell", name="move_asset", exact=True).first).to_be_visible()
    expect(changes.get_by_role("cell", name="update_asset", exact=True).first).to_be_visible()
    expect(changes.get_by_role("cell", name=re.compile(r"^price: [0-9.]+ → [0-9.]+$")).first).to_be_visible()
    expect(changes.locator("tbody tr")).to_have_count(20)  # the first rows; how many more, beside it
    expect(metadata_value(page, "changes_preview_more_rows")).to_have_text(re.compile(r"^[1-9][0-9]*$"))
    # and every other category's partition of the same asset, by a link
    page.get_by_role("link", name="printers", exact=True).last.click()
    expect(page).to_have_url(re.compile(r"partition=printers"))
    expect(page.get_by_role("row").filter(has_text="categories")).to_contain_text("printers (this one)")


def test_the_daily_schedules_and_both_sensors_are_on(page: Page) -> None:
    open_page(page, "/automation")
    for name in ("daily_c2_to_hector", "daily_hector_to_c2", "daily_per_field", "email_on_sync_failure",
                 "email_on_stale_sync"):
        row = page.locator("[data-index]").filter(has=page.get_by_text(name, exact=True))
        expect(row.locator("[class*=formatSwitch] input")).to_be_checked()


def test_the_daemon_records_each_category_s_freshness_check_without_a_run(page: Page) -> None:
    """The stale-sync sensor, ticking in the demo's daemon, records the check of every syncing
    category on its writeback as soon as it first sees it: passed, minutes after the sync."""
    succeeded = page.get_by_text("Succeeded", exact=True)  # under each check's name in the list
    deadline = time.monotonic() + 120  # the daemon's first tick of the sensor
    open_page(page, "/assets/hector_writeback?view=checks")
    while time.monotonic() < deadline:
        try:
            expect(succeeded).to_have_count(len(HECTOR_CATEGORY), timeout=10_000)
            break
        except AssertionError:
            page.reload()
    for key in HECTOR_CATEGORY:
        expect(page.get_by_text(f"{key}_synced_on_schedule", exact=True).first).to_be_visible()
    expect(succeeded).to_have_count(len(HECTOR_CATEGORY))
    expect(page.get_by_text(re.compile(r"^category '\w+' last synced .*: within the limit of 26 h"))).to_be_visible()
    page.screenshot(path=ARTIFACTS / "writeback-checks.png")


def serials(config: SyncConfig, category: str) -> dict[str, str | None]:
    """The serial number of each linked asset of the category in Hector, by its CI's id."""
    _, assets, _ = hector_state(config, HECTOR_CATEGORY[category])
    return {ci_id: a["attributes"].get("Serial number") for a in assets for ci_id in refs(a)}


def test_one_category_launched_from_the_ui_changes_that_category_alone(
    page: Page, demo: DemoUi, demo_config: SyncConfig,
) -> None:
    # the same edit in C2 ITSM to a printer and to a laptop, both already synced by the demo
    edited = {}
    for category, serial in NEW_SERIAL.items():
        synced = serials(demo_config, category)
        ci = next(c for c in c2_cis(demo_config, HECTOR_CATEGORY[category]) if c["status"] == "active"
                  and c["id"] in synced and synced[c["id"]] == c["fields"].get("SerialNumber"))
        patch_ci(demo_config, ci["id"], SerialNumber=serial)
        edited[category] = ci["id"]
    # the operator looks at the plan of both: each now holds one update, nothing is written yet
    planned = hector_sync("--config", str(demo.config), "plan", "--category", "printers", "--category", "laptops",
                          cwd=demo.folder)
    assert planned.returncode == 0, planned.stderr
    for category in NEW_SERIAL:
        assert re.search(rf"^{category} \(c2_to_hector\): .*\b1 update_asset\b", planned.stdout, re.M), planned.stdout
    # ...and notes the printers' plan id, printed under its counts
    found = re.search(r"^printers \(c2_to_hector\): .*\n  plan (\S+) \(from ", planned.stdout, re.M)
    assert found, f"no plan id under the printers line:\n{planned.stdout}"
    plan_id = found[1]
    assert plan_id.startswith("printers.hector."), plan_id
    before = {k: hector_state(demo_config, name)[1] for k, name in HECTOR_CATEGORY.items()}

    # ...then applies the printers' change set alone: its writeback, one partition, from the UI
    run_id = launch_partition_from_the_ui(page, "hector_writeback", "printers")
    status = wait_for_run(demo, run_id)
    assert status == "SUCCESS", f"run {run_id} ended {status}:\n{demo.printed()[-3000:]}"
    page.reload()
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text("partition: printers").first).to_be_visible()
    # the run applied the very plan `plan` printed
    materialized = materialization(page)
    expect(metadata_value(materialized, "plan_id")).to_have_text(plan_id)
    counts = page.locator("tr").filter(has=page.get_by_text("items_updated", exact=True)).first
    expect(counts).to_contain_text("1")
    expect(page.locator('.chart-element.box[style*="accent-green"]').first).to_be_visible()  # the steps, drawn
    page.screenshot(path=ARTIFACTS / "printers-run.png")
    page.get_by_placeholder("Filter…").fill("wrote C2 ITSM")
    expect(page.get_by_text(
        f"printers: wrote C2 ITSM → Hector (plan {plan_id}): 1 updated, 288 unchanged, 3 skipped")).to_be_visible()
    # the partition's page shows the whole of that materialization: the plan and what was written
    open_page(page, "/assets/hector_writeback?view=partitions&partition=printers")
    expect(page.get_by_role("link", name=run_id[:8], exact=True)).to_be_visible()
    expect(metadata_value(page, "plan_id")).to_have_text(plan_id)
    expect(metadata_value(page, "items_updated")).to_have_text("1")

    # Hector: the printer has its new serial; the laptop and every other asset are as before
    assert serials(demo_config, "printers")[edited["printers"]] == NEW_SERIAL["printers"]
    assert serials(demo_config, "laptops")[edited["laptops"]] != NEW_SERIAL["laptops"]
    after = {k: hector_state(demo_config, name)[1] for k, name in HECTOR_CATEGORY.items()}
    changed = {
        k: sorted(a["id"] for a in after[k] if a not in before[k]) for k in HECTOR_CATEGORY
    }
    printer = next(a["id"] for a in after["printers"] if refs(a) == [edited["printers"]])
    assert changed == {"printers": [printer], "laptops": [], "monitors": []}

    # "something looks off": the operator materializes the same partition again. The plan was
    # applied; the rerun sends nothing, says which run applied it, and succeeds.
    hector_url = str(demo_config.hector.url)
    before_rerun = {k: hector_state(demo_config, name)[:2] for k, name in HECTOR_CATEGORY.items()}
    writes_before = writes(hector_url)
    rerun_id = launch_partition_from_the_ui(page, "hector_writeback", "printers")
    assert rerun_id != run_id
    status = wait_for_run(demo, rerun_id)
    assert status == "SUCCESS", f"run {rerun_id} ended {status}:\n{demo.printed()[-3000:]}"
    assert {k: hector_state(demo_config, name)[:2] for k, name in HECTOR_CATEGORY.items()} == before_rerun
    assert writes(hector_url) == writes_before, "the rerun wrote to Hector"
    page.reload()
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text("partition: printers").first).to_be_visible()
    materialized = materialization(page)
    expect(metadata_value(materialized, "wrote_nothing")).to_contain_text(f"plan {plan_id} was applied by run {run_id}")
    expect(metadata_value(materialized, "plan_id")).to_have_text(plan_id)
    expect(page.locator('.chart-element.box[style*="accent-green"]').first).to_be_visible()
    page.screenshot(path=ARTIFACTS / "printers-rerun.png")
    page.get_by_placeholder("Filter…").fill("wrote nothing")
    expect(page.get_by_text(
        f"printers: wrote nothing C2 ITSM → Hector: plan {plan_id} was applied by run {run_id} at ")).to_be_visible()
    open_page(page, "/assets/hector_writeback?view=partitions&partition=printers")
    expect(page.get_by_role("link", name=rerun_id[:8], exact=True)).to_be_visible()
    expect(metadata_value(page, "wrote_nothing")).to_contain_text(f"was applied by run {run_id}")
    expect(page.locator("tr").filter(has=page.get_by_text("items_updated", exact=True))).to_have_count(0)


def launch_partition_from_the_ui(page: Page, asset: str, partition: str) -> str:
    """Materialize one partition of `asset` as an operator does, from its page: Materialize…, the
    partition picked, Launch 1 run, then View on the notice. The page is left on the run's page;
    the run's id."""
    open_page(page, f"/assets/{asset}")
    page.get_by_role("button", name="Materialize…").first.click()
    page.get_by_text("Select a partition or create one").click()
    page.keyboard.type(partition)
    page.locator("label").filter(has_text=partition).last.click()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Launch 1 run").click()
    toast = page.get_by_role("region", name=re.compile("Notifications"))
    expect(toast).to_contain_text("Launched run")
    toast.get_by_text("View", exact=True).click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    return page.url.rsplit("/", 1)[-1].split("?")[0]


def materialization(page: Page) -> Locator:
    """The ASSET_MATERIALIZATION event in the log of the run page."""
    return page.locator("[data-index]").filter(has=page.get_by_text("ASSET_MATERIALIZATION", exact=True))


def metadata_value(scope: Page | Locator, key: str) -> Locator:
    """The value shown for metadata entry `key` in the metadata tables within `scope`."""
    label = (scope if isinstance(scope, Page) else scope.page).get_by_text(key, exact=True)
    return scope.locator("tr").filter(has=label).locator("td").nth(1)


def test_a_held_match_shows_on_its_change_set_and_a_pin_settles_it(
    page: Page, demo: DemoUi, demo_config: SyncConfig,
) -> None:
    """The demo's one laptop whose serial matches two hand-entered assets: held, shown in the UI
    with its candidates, pinned from the command line, and linked by the next sync."""
    open_page(page, "/assets/hector_change_set?view=partitions&partition=laptops")
    held = metadata_value(page, "held_preview")
    expect(held.get_by_role("columnheader")).to_have_text(["held", "system", "id", "name", "value", "reason"])
    expect(held.get_by_text(re.compile(r"identify_by value .* matches several unlinked assets")).first).to_be_visible()
    held.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "laptops-held.png")
    ci = held.get_by_role("row").filter(has_text="C2 ITSM CI").get_by_role("cell").nth(2).inner_text()
    rows = held.get_by_role("row").filter(has_text="Hector asset")
    candidates = [rows.nth(i).get_by_role("cell").nth(2).inner_text() for i in range(rows.count())]
    assert ci.startswith("ci-") and len(candidates) == 2, (ci, candidates)

    pinned = hector_sync("--config", str(demo.config), "link", "--category", "laptops", ci, candidates[1],
                         cwd=demo.folder)
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    synced = hector_sync("--config", str(demo.config), "sync", "--category", "laptops", cwd=demo.folder)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    _, assets, _ = hector_state(demo_config, "Laptops")
    assert [a["id"] for a in assets if ci in refs(a)] == [int(candidates[1])], "the pin was not what got linked"

    # the writeback's partition shows the link written; the history says it was the operator's pin
    open_page(page, "/assets/hector_writeback?view=partitions&partition=laptops")
    written = metadata_value(page, "changes_written").get_by_role("row").filter(has_text="link_asset")
    expect(written).to_contain_text(ci)
    expect(written).to_contain_text("linked")
    told = hector_sync("--config", str(demo.config), "history", ci, cwd=demo.folder)
    assert re.search(r"link_asset +linked .*pinned by \S+ with hector-sync link", told.stdout), told.stdout
    open_page(page, "/assets/hector_change_set?view=partitions&partition=laptops")
    expect(metadata_value(page, "held")).to_have_text("0")
    page.screenshot(path=ARTIFACTS / "laptops-pinned.png")
