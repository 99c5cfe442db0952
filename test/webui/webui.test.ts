import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { projectRoot } from '../../src/util/paths';
import { ORCHESTRATOR_TASK_QUEUE } from '../../worker';
import { createAllRootfs } from '../../workflows';
import { childWorkflowId, parentWorkflowId, STEP_TITLES, STEPS } from '../../workflows/types';
import { createBuildEnv } from '../support/build-env';
import { onCleanup } from '../support/process';
import { testTemporal } from '../support/temporal';

const ARTIFACTS = path.join(projectRoot(), 'test-artifacts', 'webui');
const VIEWPORT = { width: 1600, height: 1000 };

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * A full-page screenshot. The UI scrolls inside `#content-wrapper`, not the document, so
 * Playwright's fullPage alone captures one viewport: grow the viewport to the content first.
 */
async function screenshot(page: Page, name: string): Promise<string> {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  const height = await page.locator('#content-wrapper').evaluate((el) => (el as { scrollHeight: number }).scrollHeight);
  await page.setViewportSize({ width: VIEWPORT.width, height: Math.min(Math.max(height, VIEWPORT.height), 12_000) });
  try {
    await page.screenshot({ path: file, fullPage: true });
  } finally {
    await page.setViewportSize(VIEWPORT);
  }
  console.log(`      screenshot: ${path.relative(process.cwd(), file) || file}`);
  return file;
}

/** Opens a tab of the workflow page (History, Relationships, User Metadata…) the way a user does. */
async function openTab(page: Page, name: string, route: string): Promise<void> {
  await page.getByRole('tab', { name: new RegExp(`^${escapeRegExp(name)}`) }).click();
  await page.waitForURL(new RegExp(`/${route}$`));
}

/**
 * The text of the markdown the UI renders (in an iframe) under a User Metadata heading, once
 * it shows `expected`. Summary and Current Details each sit in the nearest block with an iframe.
 */
async function renderedMarkdown(page: Page, heading: string, expected: string): Promise<string> {
  const section = page
    .getByRole('heading', { name: heading, exact: true })
    .locator('xpath=ancestor::div[.//iframe][1]');
  assert.equal(await section.locator('iframe').count(), 1, `one rendered block under "${heading}"`);
  const frame = section.frameLocator('iframe');
  await frame.getByText(expected).first().waitFor();
  return frame.locator('body').innerText();
}

describe('Temporal Web UI @real @heavy', function () {
  this.timeout(10 * 60 * 1000);

  it('shows a finished bash build: the child on the parent page, step summaries and details on the child page', async () => {
    // This run's screenshots only (a stale failure.png would mislead).
    fs.rmSync(ARTIFACTS, { recursive: true, force: true });
    const temporal = await testTemporal();
    const { client } = temporal.env;
    const env = await createBuildEnv('webui');
    await env.startWorker();

    // Its own small build, so the test also runs alone (--grep).
    const runTag = `webui-${crypto.randomBytes(3).toString('hex')}`;
    const parentId = parentWorkflowId(runTag);
    const childId = childWorkflowId(runTag, 'bash');
    const started = Date.now();
    const handle = await client.workflow.start(createAllRootfs, {
      taskQueue: ORCHESTRATOR_TASK_QUEUE,
      workflowId: parentId,
      // As `rootfs create-all` starts it.
      staticSummary: `rootfs build ${runTag}`,
      args: [{ runTag, languages: ['bash'], concurrency: 1, options: env.options, spec: env.spec(['bash']) }],
    });
    const summary = await handle.result();
    console.log(`      ${parentId} finished in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    assert.deepEqual(
      summary.images.map((i) => [i.language, i.state, i.workflowId]),
      [['bash', 'done', childId]],
    );
    const parentRunId = (await handle.describe()).runId;
    const childRunId = (await client.workflow.getHandle(childId).describe()).runId;
    const parentPath = `/namespaces/${temporal.namespace}/workflows/${encodeURIComponent(parentId)}`;
    // The child's activities, as its timeline and metadata name them.
    const activities = [
      ['probe', 'bash: look up finished steps'],
      ...STEPS.filter((s) => s !== 'allocate').map((s) => [s, `bash: ${STEP_TITLES[s]}`]),
    ] as const;
    const childPath = `/namespaces/${temporal.namespace}/workflows/${encodeURIComponent(childId)}`;

    const browser: Browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox'],
    });
    // Closed by the finally below, and by the global teardown should the test time out mid-wait.
    onCleanup(() => browser.close());
    const page = await browser.newPage({ viewport: VIEWPORT });
    // The CI machine is small and may be busy with the rest of the suite.
    page.setDefaultTimeout(60_000);
    try {
      // The URL `rootfs create-all` prints (no run ID): the UI redirects to the latest run's history.
      await page.goto(`${temporal.uiUrl}${parentPath}`);
      await page.waitForURL(`${temporal.uiUrl}${parentPath}/${parentRunId}/history`);
      await page.getByRole('heading', { name: parentId, exact: true, level: 1 }).waitFor();
      // The event-history timeline names the child by its static summary.
      await page.getByRole('button', { name: 'bash image', exact: true }).waitFor();
      await screenshot(page, 'parent-history');

      await openTab(page, 'Relationships', 'relationships');
      const childLink = page.getByRole('link', { name: childId, exact: true });
      await childLink.waitFor();
      assert.equal(await childLink.getAttribute('href'), `${childPath}/${childRunId}/history`);
      const childRow = page.getByRole('button').filter({ has: childLink });
      assert.match(await childRow.innerText(), /^Completed\s+createRootfs\s/);
      await screenshot(page, 'parent-relationships');

      await openTab(page, 'User Metadata', 'user-metadata');
      assert.equal(await renderedMarkdown(page, 'Summary', `rootfs build ${runTag}`), `rootfs build ${runTag}`);
      // Current details come from a query the worker answers: the parent's per-language table.
      const parentDetails = await renderedMarkdown(page, 'Current Details', runTag);
      assert.match(parentDetails, /^bash\tdone\b/m);
      assert.match(
        await page.locator('main').innerText(),
        /Events with Metadata\s+Child Workflow\s+guest kernel\s+Completed\s+Child Workflow\s+bash image\s+Completed/,
      );
      await screenshot(page, 'parent-user-metadata');

      // Into the child, through the link on the Relationships tab.
      await openTab(page, 'Relationships', 'relationships');
      await page.getByRole('link', { name: childId, exact: true }).click();
      await page.waitForURL(`${temporal.uiUrl}${childPath}/${childRunId}/history`);
      await page.getByRole('heading', { name: childId, exact: true, level: 1 }).waitFor();
      // The header names the parent (event rows link it too, hence the scope).
      const parentLink = page.getByLabel('workflow details').getByRole('link', { name: parentId, exact: true });
      assert.equal(await parentLink.getAttribute('href'), `${parentPath}/${parentRunId}`);
      // The timeline labels every activity "<activity type> • <summary>": the probe, which also did
      // allocate's checks, then one per step it left to run (from empty, all the others).
      for (const [type, summary] of activities) {
        await page.getByRole('button', { name: `${type} • ${summary}`, exact: true }).waitFor();
      }
      await screenshot(page, 'child-history');

      await openTab(page, 'User Metadata', 'user-metadata');
      assert.equal(await renderedMarkdown(page, 'Summary', 'bash image'), 'bash image');
      await page.getByText('bash: upload', { exact: true }).waitFor();
      // Every activity's summary, in the order they ran, each completed.
      const stepsListed = activities
        .map(([, summary]) => `Activity\\s+${escapeRegExp(summary)}\\s+Completed`)
        .join('\\s+');
      assert.match(
        await page.locator('main').innerText(),
        new RegExp(`Events with Metadata\\s+${stepsListed}\\s+Current Details`),
      );
      const childDetails = await renderedMarkdown(page, 'Current Details', 'bash: done');
      assert.match(childDetails, /^bash: done$/m);
      for (const step of STEPS) {
        assert.match(
          childDetails,
          new RegExp(`^${escapeRegExp(STEP_TITLES[step])}\\tdone\\t\\d+\\.\\d s\\t1\\t`, 'm'),
          step,
        );
      }
      await screenshot(page, 'child-user-metadata');
    } catch (err) {
      await screenshot(page, 'failure').catch(() => undefined);
      throw err;
    } finally {
      await browser.close();
    }
  });
});
