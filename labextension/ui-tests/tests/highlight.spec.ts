import {
  cellMimeTypes,
  cellTokens,
  expect,
  IToken,
  REAL_KERNELS,
  restartKernel,
  screenshotPath,
  test,
  waitForKernelInfo
} from './helpers';

const QUERY = [
  '%%mpc --out by_sex --plot bar',
  "SELECT sex, COUNT(*), AVG(age), MEDIAN(bmi) -- one row per sex",
  "FROM patients WHERE age >= 18 AND site = 'north' GROUP BY sex"
].join('\n');

function find(tokens: IToken[], text: string): IToken {
  const token = tokens.find(t => t.text === text);
  if (!token) {
    throw new Error(`no token "${text}" in ${JSON.stringify(tokens.map(t => t.text))}`);
  }
  return token;
}

async function expectHighlighted(page: Parameters<typeof cellTokens>[0], cellIndex: number): Promise<void> {
  // Tokens are styled asynchronously after a MIME type change: poll.
  await expect
    .poll(async () => {
      const { tokens, theme } = await cellTokens(page, cellIndex);
      const colour = (text: string) => tokens.find(t => t.text === text)?.color;
      return {
        magic: colour('%%mpc') === theme.meta,
        option: colour('--out') === theme.attribute,
        keyword: colour('SELECT') === theme.keyword && colour('GROUP') === theme.keyword,
        aggregate: colour('COUNT') === theme.builtin && colour('MEDIAN') === theme.builtin,
        string: colour("'north'") === theme.string,
        number: colour('18') === theme.number,
        comment: colour('-- one row per sex') === theme.comment
      };
    })
    .toEqual({
      magic: true,
      option: true,
      keyword: true,
      aggregate: true,
      string: true,
      number: true,
      comment: true
    });
  const { tokens, plain } = await cellTokens(page, cellIndex);
  // Keywords are bold in the JupyterLab themes, and differ from plain text.
  expect(Number(find(tokens, 'SELECT').fontWeight)).toBeGreaterThanOrEqual(600);
  expect(find(tokens, 'SELECT').color).not.toBe(plain);
  // Aggregates are not keywords (the light theme gives both the same colour).
  expect(Number(find(tokens, 'COUNT').fontWeight)).toBeLessThan(600);
  // Column and table names stay plain text (no styled span).
  expect(tokens.map(t => t.text)).not.toContain('patients');
}

test.use(REAL_KERNELS);

test.describe('%%mpc cell highlighting', () => {
  test('styles magic, options, keywords and aggregates, and keeps them after a kernel restart', async ({
    page
  }) => {
    await page.notebook.createNew('highlight.ipynb');
    await page.notebook.setCell(0, 'code', QUERY);
    await page.notebook.addCell('code', 'x = 1  # plain Python');

    await expectHighlighted(page, 0);
    expect(await cellMimeTypes(page)).toEqual(['text/x-mpc', 'text/x-ipython']);
    await page.screenshot({ path: screenshotPath('mpc-highlighting.png') });

    // Kernel info resets every code cell's MIME type: ours must come back.
    await restartKernel(page);
    expect(await cellMimeTypes(page)).toEqual(['text/x-mpc', 'text/x-ipython']);
    await expectHighlighted(page, 0);
    await page.screenshot({ path: screenshotPath('mpc-highlighting-after-restart.png') });
  });

  test('a saved notebook keeps its highlighting once the kernel info arrives', async ({ page, tmpPath }) => {
    // No language_info in the file: the notebook sets it from the kernel info reply and
    // resets every code cell's MIME type then.
    const notebook = {
      cells: [
        { cell_type: 'code', execution_count: null, metadata: {}, outputs: [], source: QUERY },
        { cell_type: 'code', execution_count: null, metadata: {}, outputs: [], source: 'x = 1' }
      ],
      metadata: { kernelspec: { name: 'python3', display_name: 'Python 3 (ipykernel)', language: 'python' } },
      nbformat: 4,
      nbformat_minor: 5
    };
    await page.contents.uploadContent(JSON.stringify(notebook), 'text', `${tmpPath}/saved.ipynb`);
    await page.notebook.openByPath(`${tmpPath}/saved.ipynb`);
    await waitForKernelInfo(page);
    expect(await cellMimeTypes(page)).toEqual(['text/x-mpc', 'text/x-ipython']);
    await expectHighlighted(page, 0);
  });

  test('a cell that stops being an %%mpc cell goes back to Python', async ({ page }) => {
    await page.notebook.createNew('toggle.ipynb');
    await page.notebook.setCell(0, 'code', QUERY);
    await expect.poll(() => cellMimeTypes(page)).toEqual(['text/x-mpc']);
    await page.notebook.setCell(0, 'code', 'SELECT = 3');
    await expect.poll(() => cellMimeTypes(page)).toEqual(['text/x-ipython']);
  });
});
