import { expect, REAL_KERNELS, screenshotPath, setSource, showPanel, test } from './helpers';

const PANEL_ID = 'mpc-jupyter-consortium';

// Publishes a state from the kernel exactly as mpc_jupyter does, without any site agent.
const PUBLISH = `
from mpc_jupyter.panel import PanelPublisher
publisher = PanelPublisher()
publisher.publish({
    "consortium": {"name": "north-3", "analyst": "ana", "policy": {"min_group_size": 10, "epsilon": 1.0}},
    "sites": [
        {"name": "st-olav", "address": "wss://olav:8443", "online": True, "latency_ms": 12.4,
         "policy_digest": "ab" * 32, "tables": ["patients"]},
        {"name": "haukeland", "address": "wss://hauk:8443", "online": False, "tables": ["patients"]},
    ],
    "queries": [
        {"id": "q1", "text": "SELECT sex, COUNT(*) FROM patients GROUP BY sex", "seconds": 2.5,
         "sites": ["st-olav", "haukeland"], "receipts": [{"site": "st-olav", "digest": "cd" * 32}],
         "reveals": [{"name": "count", "rows": 2}], "suppressed": 1},
    ],
});
`;

test.use(REAL_KERNELS);

test.describe('MPC consortium panel', () => {
  test('shows the state a kernel publishes, and again after a page reload', async ({ page }) => {
    await page.notebook.createNew('panel.ipynb');
    await setSource(page, 0, PUBLISH);
    await page.notebook.runCell(0, true);
    await showPanel(page, PANEL_ID);

    const panel = page.locator(`#${PANEL_ID}`);
    await expect(panel.locator('.jp-MpcPanel-site')).toHaveCount(2);
    await expect(panel).toContainText('Sites (1/2 online)');
    await expect(panel.locator('[data-site="st-olav"]')).toContainText('12 ms');
    await expect(panel.locator('.jp-MpcPanel-query')).toContainText('SELECT sex, COUNT(*)');
    await expect(panel.locator('.jp-MpcPanel-query')).toContainText('1 suppressed');
    await expect(panel.locator('.jp-MpcPanel-policy')).toContainText('min_group_size');
    await page.screenshot({ path: screenshotPath('mpc-panel.png') });

    // A reloaded page re-attaches to the kernel's comm and asks for the state.
    // (The restored layout shows the notebook, not the launcher galata waits for by default.)
    await page.reload({ waitForIsReady: false });
    await page.waitForSelector('#jupyterlab-splash', { state: 'detached' });
    await page.evaluate(() => (window as any).jupyterapp.restored);
    await showPanel(page, PANEL_ID);
    await expect(page.locator(`#${PANEL_ID} .jp-MpcPanel-site`)).toHaveCount(2);
  });
});
