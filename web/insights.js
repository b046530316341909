// The dashboard's insights, beside the page heatmap (the <section id="insights"> of
// dashboard.html): what none of the peers shows, each small.
// - Confidence: the sessions and events behind the current view, and a warning when they
//   are too few to trust.
// - Export: the current view as the server's PNG (legend and caption) and its counts as CSV.
// - Frustration: rage and dead clicks per element (GET /api/insights/clicks), and a toggle
//   that marks them on the heatmap.
// - Compare: one page over two ranges (or two widths) side by side, and a diverging map of
//   the difference of their normalised densities (blue = less in B, white = same, red = more).
// It reads the heatmap's controls (hm-page, hm-kind, hm-width, hm-range) and never changes them.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  /**
   * Fewer sessions than this behind a view and the dashboard warns that the map is not to
   * be trusted: a handful of visitors draw a shape that the next handful may not repeat.
   * Thirty is the usual rule of thumb for a sample's mean to settle.
   */
  const MIN_SESSIONS = 30;
  /** Elements shown in the frustration list (the API's --max-insight-elements bounds it too). */
  const FRUSTRATION_ROWS = 10;
  /** The difference map's diverging colours: less in B, the same, more in B (ColorBrewer RdBu). */
  const LESS_RGB = [33, 102, 172];
  const SAME_RGB = [255, 255, 255];
  const MORE_RGB = [178, 24, 43];

  const section = $('insights');
  if (!section) return;

  /** Bumped on every view change, so an answer to an earlier view is dropped. */
  let generation = 0;
  /** The latest frustration answer, for the marks. */
  let latestInsights = null;

  /** The view the heatmap controls describe now. */
  function currentView() {
    const value = (id) => ($(id) ? $(id).value : '');
    return { page: value('hm-page'), kind: value('hm-kind') || 'click', width: value('hm-width') || 'desktop', range: value('hm-range') };
  }

  function heatmapParams(view, format) {
    const params = new URLSearchParams({ page: view.page, kind: view.kind, width: view.width, format });
    if (view.range) params.set('range', view.range);
    return params;
  }

  async function errorOf(response) {
    try {
      return (await response.json()).error || response.statusText;
    } catch (_) {
      return response.statusText;
    }
  }

  /** Everything that follows the view: confidence, export links, frustration, marks. */
  async function refresh() {
    const view = currentView();
    generation += 1;
    const mine = generation;
    const current = () => mine === generation;
    section.dataset.page = view.page;
    if (!view.page) {
      $('ins-confidence').textContent = 'No page has events yet.';
      return;
    }
    const png = heatmapParams(view, 'png');
    png.set('output', 'image');
    $('ins-png').href = `/api/heatmaps?${png}`;
    $('ins-png').download = `heatmap-${view.kind}-${view.width}.png`;
    $('ins-csv').href = `/api/heatmaps?${heatmapParams(view, 'csv')}`;
    $('ins-csv').download = `heatmap-${view.kind}-${view.width}.csv`;
    await Promise.all([showConfidence(view, current), showFrustration(view, current)]);
  }

  /** The sessions and events behind the view, and the warning under MIN_SESSIONS. */
  async function showConfidence(view, current) {
    let sessions = 0;
    let events = 0;
    const params = new URLSearchParams({ page: view.page, width: view.width });
    if (view.range) params.set('range', view.range);
    try {
      const response = await fetch(`/api/insights/confidence/${encodeURIComponent(view.kind)}?${params}`);
      if (response.ok) {
        const counts = await response.json();
        sessions = counts.sessions || 0;
        events = counts.events || 0;
      } else if (response.status !== 404) {
        throw new Error(await errorOf(response));
      }
    } catch (err) {
      if (!current()) return;
      $('ins-confidence').textContent = `The numbers behind this view could not be read: ${err.message || err}`;
      return;
    }
    if (!current()) return;
    const confidence = $('ins-confidence');
    confidence.dataset.page = view.page;
    confidence.dataset.sessions = String(sessions);
    confidence.dataset.events = String(events);
    const plural = (n, one, many) => `${n.toLocaleString('en')} ${n === 1 ? one : many}`;
    confidence.textContent = `Behind this view: ${plural(sessions, 'session', 'sessions')}, ${plural(events, 'event', 'events')}.`;
    const warning = $('ins-warning');
    warning.hidden = sessions >= MIN_SESSIONS;
    warning.textContent = `Fewer than ${MIN_SESSIONS} sessions: too few to trust this map's shape; widen the range or wait for more visitors.`;
  }

  /** The frustration list: rage bursts and dead clicks per element, the worst first. */
  async function showFrustration(view, current) {
    const params = new URLSearchParams({ page: view.page, limit: String(FRUSTRATION_ROWS) });
    if (view.range) params.set('range', view.range);
    let answer;
    try {
      const response = await fetch(`/api/insights/clicks?${params}`);
      if (!response.ok) throw new Error(await errorOf(response));
      answer = await response.json();
    } catch (err) {
      if (!current()) return;
      $('ins-frustration-note').textContent = `The frustration list could not be read: ${err.message || err}`;
      return;
    }
    if (!current()) return;
    latestInsights = answer;
    const body = $('ins-frustration').querySelector('tbody');
    body.replaceChildren();
    for (const element of answer.elements) {
      const row = document.createElement('tr');
      row.dataset.path = element.path;
      row.dataset.rage = String(element.rage_bursts);
      row.dataset.dead = String(element.dead_clicks);
      for (const value of [element.path, element.clicks, element.rage_bursts, element.dead_clicks, element.sessions]) {
        const cell = document.createElement('td');
        cell.textContent = String(value);
        row.append(cell);
      }
      body.append(row);
    }
    const more = answer.n_elements > answer.elements.length ? `; the ${answer.elements.length} worst of ${answer.n_elements} elements shown` : '';
    const cut = answer.truncated ? ' (only the oldest stored events of this range were read: narrow it)' : '';
    $('ins-frustration-note').textContent = `${answer.clicks} clicks in ${answer.sessions} sessions: ${answer.rage_bursts} rage bursts (3+ clicks within 1 s and 30 px), ${answer.dead_clicks} dead clicks (nothing changed within 1 s)${more}${cut}.`;
    drawMarks();
  }

  /** Marks each rage burst and dead click on the heatmap's stage while the toggle is on. */
  function drawMarks() {
    const stage = $('hm-stage');
    if (!stage) return;
    let layer = $('ins-marks-layer');
    if (!layer) {
      layer = document.createElement('div');
      layer.id = 'ins-marks-layer';
      stage.append(layer);
    }
    layer.replaceChildren();
    const wanted = $('ins-marks').checked && !stage.hidden && latestInsights && latestInsights.page === currentView().page;
    layer.hidden = !wanted;
    if (!wanted) return;
    let doc = null;
    const frame = $('hm-frame');
    try { doc = frame && !frame.hidden ? frame.contentDocument : null; } catch (_) { doc = null; }
    const stageBox = stage.getBoundingClientRect();
    for (const spot of latestInsights.spots) {
      let left = null;
      let top = null;
      // On its element in the framed page where it can be found, as the heatmap places clicks.
      let element = null;
      try { element = doc && spot.path ? doc.querySelector(spot.path) : null; } catch (_) { element = null; }
      if (element) {
        const box = element.getBoundingClientRect();
        const frameBox = frame.getBoundingClientRect();
        left = frameBox.left - stageBox.left + box.left + box.width * (spot.ox ?? 0.5);
        top = frameBox.top - stageBox.top + box.top + box.height * (spot.oy ?? 0.5);
      } else if (spot.x !== null && spot.dw && spot.dh) {
        left = (spot.x / spot.dw) * stageBox.width;
        top = (spot.y / spot.dh) * stageBox.height;
      }
      if (left === null) continue;
      const mark = document.createElement('span');
      mark.className = `ins-mark ins-${spot.kind}`;
      mark.dataset.kind = spot.kind;
      mark.dataset.path = spot.path || '';
      mark.title = spot.kind === 'rage' ? `rage click on ${spot.path}` : `dead click on ${spot.path}`;
      mark.textContent = spot.kind === 'rage' ? 'R' : 'D';
      mark.style.left = `${left}px`;
      mark.style.top = `${top}px`;
      layer.append(mark);
    }
  }

  /** Epoch ms of a datetime-local input (the browser's local time), or null when empty. */
  function timeOf(id) {
    const value = $(id).value;
    if (!value) return null;
    const ms = new Date(value).getTime();
    return Number.isFinite(ms) ? ms : null;
  }

  /** Side by side A and B, then their difference: B's share of events minus A's, per cell. */
  async function compare() {
    const view = currentView();
    const message = $('ins-compare-message');
    const figure = $('ins-compare-view');
    const [aFrom, aTo, bFrom, bTo] = ['ins-a-from', 'ins-a-to', 'ins-b-from', 'ins-b-to'].map(timeOf);
    if (!view.page) { message.textContent = 'Choose a page first.'; return; }
    if (aFrom === null || aTo === null || bFrom === null || bTo === null) {
      message.textContent = 'Give both ranges, A and B, a start and an end.';
      return;
    }
    const bWidth = $('ins-b-width').value || view.width;
    const paramsOf = (from, to, width, format) => {
      const params = new URLSearchParams({ page: view.page, kind: view.kind, width, format, from: String(from), to: String(to) });
      if (format === 'png') params.set('output', 'image');
      return params;
    };
    figure.dataset.state = 'loading';
    message.textContent = 'Comparing…';
    const grids = [];
    for (const [from, to, width, name] of [[aFrom, aTo, view.width, 'A'], [bFrom, bTo, bWidth, 'B']]) {
      const response = await fetch(`/api/heatmaps?${paramsOf(from, to, width, 'json')}`);
      if (!response.ok) {
        figure.dataset.state = 'failed';
        message.textContent = `Range ${name} has no map: ${await errorOf(response)}`;
        return;
      }
      grids.push(await response.json());
    }
    $('ins-map-a').src = `/api/heatmaps?${paramsOf(aFrom, aTo, view.width, 'png')}`;
    $('ins-map-b').src = `/api/heatmaps?${paramsOf(bFrom, bTo, bWidth, 'png')}`;
    drawDifference($('ins-diff'), grids[0], grids[1]);
    figure.hidden = false;
    figure.dataset.state = 'shown';
    message.textContent = `A: ${grids[0].n_points} events, ${grids[0].n_sessions} sessions. B: ${grids[1].n_points} events, ${grids[1].n_sessions} sessions. Each map is divided by its own total before B − A, so a busier range does not look hotter everywhere.`;
  }

  /**
   * The diverging difference map on `canvas`, one pixel per cell of the coarse grid
   * (scaled up smoothly by CSS): each grid divided by its own total, both read at the
   * same fractions of the document, lightly smoothed, then B − A scaled by its largest
   * magnitude onto blue (less in B), white (same) and red (more in B).
   */
  function drawDifference(canvas, gridA, gridB) {
    const columns = gridA.width;
    const rows = Math.max(gridA.height, gridB.height);
    const share = (grid) => {
      const total = grid.cells.reduce((sum, count) => sum + count, 0) || 1;
      const out = new Float64Array(columns * rows);
      for (let row = 0; row < rows; row += 1) {
        const sourceRow = Math.min(grid.height - 1, Math.floor(((row + 0.5) * grid.height) / rows));
        for (let col = 0; col < columns; col += 1) {
          const sourceCol = Math.min(grid.width - 1, Math.floor(((col + 0.5) * grid.width) / columns));
          out[row * columns + col] = grid.cells[sourceRow * grid.width + sourceCol] / total;
        }
      }
      return smooth(out, columns, rows);
    };
    const a = share(gridA);
    const b = share(gridB);
    let largest = 0;
    const difference = new Float64Array(columns * rows);
    for (let idx = 0; idx < difference.length; idx += 1) {
      difference[idx] = b[idx] - a[idx];
      largest = Math.max(largest, Math.abs(difference[idx]));
    }
    canvas.width = columns;
    canvas.height = rows;
    const context = canvas.getContext('2d');
    const image = context.createImageData(columns, rows);
    for (let idx = 0; idx < difference.length; idx += 1) {
      const t = largest > 0 ? difference[idx] / largest : 0;
      const toward = t < 0 ? LESS_RGB : MORE_RGB;
      const amount = Math.sqrt(Math.abs(t));
      for (let channel = 0; channel < 3; channel += 1) {
        image.data[idx * 4 + channel] = Math.round(SAME_RGB[channel] + (toward[channel] - SAME_RGB[channel]) * amount);
      }
      image.data[idx * 4 + 3] = 255;
    }
    context.putImageData(image, 0, 0);
  }

  /** One pass of a 3×3 box blur, so single cells read as spots rather than specks. */
  function smooth(values, columns, rows) {
    const out = new Float64Array(values.length);
    for (let row = 0; row < rows; row += 1) {
      for (let col = 0; col < columns; col += 1) {
        let sum = 0;
        let n = 0;
        for (let dy = -1; dy <= 1; dy += 1) {
          for (let dx = -1; dx <= 1; dx += 1) {
            const y = row + dy;
            const x = col + dx;
            if (y < 0 || y >= rows || x < 0 || x >= columns) continue;
            sum += values[y * columns + x] * (dx === 0 && dy === 0 ? 4 : 1);
            n += dx === 0 && dy === 0 ? 4 : 1;
          }
        }
        out[row * columns + col] = sum / n;
      }
    }
    return out;
  }

  for (const id of ['hm-page', 'hm-kind', 'hm-width', 'hm-range']) {
    if ($(id)) $(id).addEventListener('change', () => { refresh(); });
  }
  if ($('hm-show')) $('hm-show').addEventListener('click', () => { refresh(); });
  $('ins-marks').addEventListener('change', drawMarks);
  $('ins-compare').addEventListener('click', () => {
    compare().catch((err) => {
      $('ins-compare-view').dataset.state = 'failed';
      $('ins-compare-message').textContent = `The comparison failed: ${err.message || err}`;
    });
  });
  // The heatmap redraws itself (and resizes its stage) on its own; the marks follow it.
  const stage = $('hm-stage');
  if (stage) {
    new MutationObserver(drawMarks).observe(stage, { attributes: true, attributeFilter: ['data-state', 'hidden'] });
  }
  // The page list fills in once the dashboard has read it: the first view follows.
  const pages = $('hm-page');
  if (pages) {
    const first = new MutationObserver(() => {
      if (pages.value) {
        first.disconnect();
        refresh();
      }
    });
    first.observe(pages, { childList: true });
    if (pages.value) refresh();
  }
})();
