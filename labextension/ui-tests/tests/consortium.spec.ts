/**
 * End to end against a real consortium: three site agents started by global setup
 * (consortium.js), a notebook kernel that finds them through MPC_CONSORTIUM.
 */
import {
  appendCell,
  consortiumState,
  expect,
  needsConsortium,
  REAL_KERNELS,
  screenshotPath,
  setSource,
  showPanel,
  test
} from './helpers';

const PANEL_ID = 'mpc-jupyter-consortium';
const SITES = ['north', 'central', 'south'];

test.use(REAL_KERNELS);

test.describe('a real consortium', () => {
  needsConsortium();
  // Tall enough for the table and the chart of one query in the screenshots.
  test.use({ viewport: { width: 1280, height: 1100 } });

  test('an %%mpc cell renders its table and chart; the panel lists the sites and the query', async ({ page }) => {
    test.setTimeout(180 * 1000);
    const consortium = consortiumState()!;
    const wards = Object.keys(consortium.expected);
    expect(wards.length).toBeGreaterThan(3);

    await page.notebook.createNew('consortium.ipynb');
    await setSource(page, 0, '%load_ext mpc_jupyter\n%mpc connect');
    await appendCell(page, `%%mpc --plot bar\n${consortium.query}`);

    // Connect (no path: $MPC_CONSORTIUM) shows the committee's status.
    await page.notebook.runCell(0, true);
    const connected = page.locator('.jp-Notebook .jp-Cell').nth(0).locator('.jp-OutputArea');
    await expect(connected).toContainText('connected to', { timeout: 60000 });
    for (const site of SITES) {
      await expect(connected.locator('tbody tr', { hasText: site })).toContainText('True');
    }

    // The query: its table equals the pooled count, then the chart as an image.
    await page.notebook.runCell(1, true);
    const output = page.locator('.jp-Notebook .jp-Cell').nth(1).locator('.jp-OutputArea');
    await expect(output.locator('table.dataframe')).toBeVisible({ timeout: 60000 });
    const rows = output.locator('table.dataframe tbody tr');
    await expect(rows).toHaveCount(wards.length);
    for (const [ward, count] of Object.entries(consortium.expected)) {
      const cells = rows.filter({ has: page.locator('td', { hasText: new RegExp(`^${ward}$`) }) }).locator('td');
      await expect(cells).toHaveText([ward, String(count)]);
    }
    await expect(output).toContainText('3 sites (north, central, south)');
    const chart = output.locator('.jp-RenderedImage img');
    await expect(chart).toBeVisible();
    const size = await chart.evaluate(img => [(img as HTMLImageElement).naturalWidth, (img as HTMLImageElement).naturalHeight]);
    expect(size[0]).toBeGreaterThan(200);
    expect(size[1]).toBeGreaterThan(100);
    await chart.scrollIntoViewIfNeeded();
    await page.screenshot({ path: screenshotPath('consortium-notebook.png') });

    // The side panel, fed by the magics: the consortium, its three sites online, the query.
    await showPanel(page, PANEL_ID);
    const panel = page.locator(`#${PANEL_ID}`);
    await expect(panel.locator('.jp-MpcPanel-site')).toHaveCount(3);
    await expect(panel).toContainText('Sites (3/3 online)');
    for (const site of SITES) {
      await expect(panel.locator(`[data-site="${site}"] .jp-MpcPanel-status`)).toHaveClass(/jp-mod-online/);
      await expect(panel.locator(`[data-site="${site}"] + .jp-MpcPanel-siteTables`)).toContainText(
        'admissions, diagnoses, labs, patients, survival'
      );
    }
    await expect(panel.locator('.jp-MpcPanel-consortium')).toContainText('analyst');
    await expect(panel.locator('.jp-MpcPanel-policy')).toContainText('digest');
    const query = panel.locator('.jp-MpcPanel-query');
    await expect(query).toHaveCount(1);
    await expect(query.locator('.jp-MpcPanel-queryText')).toHaveText(consortium.query);
    await expect(query).toContainText('sites: north, central, south');
    await expect(query).toContainText('revealed');
    await query.locator('.jp-MpcPanel-receipts summary').click();
    await expect(query.locator('.jp-MpcPanel-receipts li')).toHaveCount(3);
    await page.screenshot({ path: screenshotPath('consortium-panel.png') });
    await panel.screenshot({ path: screenshotPath('consortium-panel-detail.png') });
  });
});
