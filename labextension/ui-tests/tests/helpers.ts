/**
 * Shared helpers for the mpc-jupyter browser tests.
 *
 * Suites:
 * - highlight.spec.ts   `%%mpc` cell highlighting (no consortium needed)
 * - panel.spec.ts       the side panel fed by PanelPublisher from a cell (no consortium needed)
 * - consortium.spec.ts  end-to-end against the demo consortium that global setup starts
 *                       (consortium.js): call needsConsortium() in the describe block
 */
import * as path from 'path';

import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';

export { expect, test };

/**
 * Fixture options for every spec: talk to the real kernels and sessions REST API.
 * Galata's mock of it answers a kernel restart with 201 (JupyterLab expects 200)
 * and loses the notebook's session on a page reload.
 */
export const REAL_KERNELS = { kernels: null, sessions: null } as const;

/** What global setup wrote about the running demo consortium (see consortium.js). */
export interface IConsortiumState {
  folder: string;
  path: string;
  pid: number;
  /** The query to run, and its pooled answer computed from the sites' Parquet files. */
  query: string;
  expected: Record<string, number>;
}

/** The running consortium, or null when global setup started none (MPC_UI_CONSORTIUM=0). */
export function consortiumState(): IConsortiumState | null {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  return require('../consortium').readState();
}

/**
 * Call inside a `test.describe` of tests that need the running consortium (site agents):
 * they are skipped when global setup started none (MPC_UI_CONSORTIUM=0).
 */
export function needsConsortium(): void {
  test.skip(!consortiumState(), 'no consortium running (MPC_UI_CONSORTIUM=0)');
}

/** Append a code cell with this source to the current notebook (through the model). */
export async function appendCell(page: IJupyterLabPageFixture, source: string): Promise<void> {
  await page.evaluate(text => {
    const panel = (window as any).jupyterapp.shell.currentWidget;
    const model = panel.content.model.sharedModel;
    model.insertCell(model.cells.length, { cell_type: 'code', source: text });
  }, source);
}

/** Where named screenshots are kept (beside Playwright's own artifacts). */
export function screenshotPath(name: string): string {
  return path.resolve(__dirname, '..', 'test-results', 'screenshots', name);
}

/** A highlighted token of a cell editor: its text and the style it was given. */
export interface IToken {
  text: string;
  color: string;
  fontWeight: string;
}

/** Token spans of a cell's editor, plus the theme colours they should have. */
export async function cellTokens(
  page: IJupyterLabPageFixture,
  cellIndex: number
): Promise<{ tokens: IToken[]; theme: Record<string, string>; plain: string }> {
  return page.evaluate(index => {
    const cells = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell');
    const content = cells[index]?.querySelector('.cm-content');
    if (!content) {
      throw new Error(`no editor for cell ${index}`);
    }
    const resolve = (variable: string): string => {
      const probe = document.createElement('span');
      probe.style.color = `var(${variable})`;
      content.appendChild(probe);
      const color = getComputedStyle(probe).color;
      probe.remove();
      return color;
    };
    const theme: Record<string, string> = {};
    for (const name of ['keyword', 'builtin', 'meta', 'attribute', 'string', 'number', 'comment', 'operator', 'def']) {
      theme[name] = resolve(`--jp-mirror-editor-${name}-color`);
    }
    const tokens = Array.from(content.querySelectorAll('.cm-line span')).map(span => {
      const style = getComputedStyle(span);
      return { text: span.textContent ?? '', color: style.color, fontWeight: style.fontWeight };
    });
    return { tokens, theme, plain: getComputedStyle(content).color };
  }, cellIndex);
}

/** MIME types of the current notebook's cells (from the models). */
export async function cellMimeTypes(page: IJupyterLabPageFixture): Promise<string[]> {
  return page.evaluate(() => {
    const panel = (window as any).jupyterapp.shell.currentWidget;
    return panel.content.widgets.map((cell: any) => cell.model.mimeType as string);
  });
}

/** Wait until the current notebook's kernel is ready and its kernel info (language_info) has landed. */
export async function waitForKernelInfo(page: IJupyterLabPageFixture): Promise<void> {
  await page.evaluate(async () => {
    const panel = (window as any).jupyterapp.shell.currentWidget;
    await panel.sessionContext.ready;
    await panel.sessionContext.session.kernel.info;
    await new Promise(resolve => setTimeout(resolve, 500));
  });
}

/** Restart the current notebook's kernel and wait for its kernel info (language_info) to land. */
export async function restartKernel(page: IJupyterLabPageFixture): Promise<void> {
  await page.evaluate(async () => {
    const panel = (window as any).jupyterapp.shell.currentWidget;
    const kernel = panel.sessionContext.session.kernel;
    await kernel.restart();
    await kernel.info;
    // Let the notebook apply language_info to the cells, and the editors re-render.
    await new Promise(resolve => setTimeout(resolve, 500));
  });
}

/** Replace a cell's source through its model (typing would auto-indent and close brackets). */
export async function setSource(page: IJupyterLabPageFixture, cellIndex: number, source: string): Promise<void> {
  await page.evaluate(
    ([index, text]) => {
      const panel = (window as any).jupyterapp.shell.currentWidget;
      panel.content.model.cells.get(index).sharedModel.setSource(text);
    },
    [cellIndex, source] as [number, string]
  );
}

/** Show a side panel by its widget id. */
export async function showPanel(page: IJupyterLabPageFixture, id: string): Promise<void> {
  await page.evaluate(widgetId => (window as any).jupyterapp.shell.activateById(widgetId), id);
}
