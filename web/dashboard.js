// The live dashboard: numbers pushed by the relay once a second over a WebSocket (no
// polling), a 5-minute rate chart with a spike alert, top pages and countries, live
// sessions with their journeys, and a page's heatmap laid over the page itself.
'use strict';

(() => {
  const BACKOFF_INITIAL_MS = 100;
  const BACKOFF_MAX_MS = 5000;
  const $ = (id) => document.getElementById(id);
  let backoffMs = BACKOFF_INITIAL_MS;
  const knownPages = new Set();

  const LABELS = { 'browser-relay': 'Browser ↔ Relay', 'relay-renderer': 'Relay ↔ Renderer' };
  function setLink(link, state, text) {
    const element = document.querySelector(`[data-link="${link}"]`);
    element.dataset.state = state;
    element.querySelector('.label').textContent = `${LABELS[link]}: ${text || state}`;
  }

  function connect() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/ws`);
    setLink('browser-relay', 'connecting');
    socket.addEventListener('open', () => {
      backoffMs = BACKOFF_INITIAL_MS;
      setLink('browser-relay', 'connected');
      socket.send(JSON.stringify({ type: 'hello', v: 1 }));
      socket.send(JSON.stringify({ type: 'watch' }));
    });
    socket.addEventListener('message', (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch (_) { return; }
      if (msg.type === 'welcome' || msg.type === 'link') setLink('relay-renderer', msg.renderer);
      else if (msg.type === 'presence') $('online').textContent = msg.online;
      else if (msg.type === 'analytics') show(msg.summary, msg.sessions);
    });
    socket.addEventListener('close', () => {
      setLink('browser-relay', 'disconnected');
      setLink('relay-renderer', 'disconnected', 'unknown');
      const delay = backoffMs * (0.5 + Math.random() / 2);
      backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS);
      setTimeout(connect, delay);
    });
  }

  function show(summary, sessions) {
    $('active-users').textContent = summary.active_users;
    $('events-minute').textContent = summary.events_last_minute.toLocaleString();
    $('events-5').textContent = summary.events_last_5_minutes.toLocaleString();
    drawRate(summary.per_second);
    checkSpike(summary.per_second);
    fillList($('top-pages'), summary.top_pages);
    fillList($('top-countries'), summary.top_countries);
    for (const page of summary.top_pages) addPage(page.name);
    const rows = sessions.map((session) => {
      const row = document.createElement('tr');
      const journey = session.journey.join(' → ');
      const cells = [session.sessionId.slice(0, 14), session.country || '–', journey, session.events,
        new Date(session.last_seen).toLocaleTimeString()];
      for (const value of cells) {
        const cell = document.createElement('td');
        cell.textContent = value;
        row.append(cell);
      }
      return row;
    });
    $('sessions').replaceChildren(...rows);
  }

  function fillList(list, counts) {
    list.replaceChildren(...counts.map((count) => {
      const item = document.createElement('li');
      item.textContent = `${count.name} — ${count.events.toLocaleString()}`;
      return item;
    }));
  }

  function addPage(page) {
    if (knownPages.has(page)) return;
    knownPages.add(page);
    const option = document.createElement('option');
    option.value = page;
    option.textContent = page;
    $('hm-page').append(option);
  }

  function drawRate(perSecond) {
    const canvas = $('rate');
    const context = canvas.getContext('2d');
    const { width, height } = canvas;
    context.clearRect(0, 0, width, height);
    const max = Math.max(1, ...perSecond);
    const step = width / perSecond.length;
    context.fillStyle = '#3b82f6';
    perSecond.forEach((value, idx) => {
      const barHeight = (value / max) * (height - 16);
      context.fillRect(idx * step, height - barHeight, Math.max(1, step - 0.5), barHeight);
    });
    context.fillStyle = '#5b6475';
    context.font = '12px system-ui, sans-serif';
    context.fillText(`peak ${max}/s`, 6, 12);
  }

  /** The last 10 seconds against the 290 before them. */
  function checkSpike(perSecond) {
    const factor = Number($('spike-factor').value) || 3;
    const recent = perSecond.slice(-10);
    const before = perSecond.slice(0, -10);
    const recentRate = recent.reduce((a, b) => a + b, 0) / recent.length;
    const baseline = before.reduce((a, b) => a + b, 0) / Math.max(1, before.length);
    const alert = $('spike-alert');
    const spiking = recentRate >= 1 && recentRate > factor * Math.max(baseline, 0.1);
    alert.hidden = !spiking;
    if (spiking) {
      alert.textContent = `Spike: ${recentRate.toFixed(1)} events/s in the last 10 s, ${factor}× above the recent ${baseline.toFixed(2)}/s.`;
    }
  }

  /**
   * The page-heatmap view. Every change of what it shows (page, kind, width, range, site,
   * screenshot) draws the matching map; each drawing takes the next generation number and
   * writes to the view only while it is still the newest, so a slow answer to an earlier
   * choice never replaces a newer one. The view's size comes from the page under the heat
   * (the framed document, or the screenshot), never from whichever answer lands last.
   */
  const view = { generation: 0, ignored: 0, frameUrl: null, frameLoaded: null, shot: null, shotUrl: null, overlayUrl: null };
  /** How long a framed page may take to load before the map is drawn without it. */
  const FRAME_LOAD_TIMEOUT_MS = 10000;
  /** A window being resized settles this long before the map is placed again. */
  const RESIZE_SETTLE_MS = 250;
  const KIND_NAMES = { click: 'clicks', move: 'moves', scroll: 'scroll depth' };

  for (const id of ['hm-page', 'hm-kind', 'hm-width', 'hm-range', 'hm-site', 'hm-shot']) {
    $(id).addEventListener('change', () => { showHeatmap(); });
  }
  $('hm-show').addEventListener('click', () => { showHeatmap(); });
  // A new width reflows the framed page: its elements move, so the map is placed again.
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    if ($('hm-stage').hidden) return;
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { showHeatmap(); }, RESIZE_SETTLE_MS);
  });

  /** Counts an answer that arrived after a newer choice, and drops it (the stage shows how many, for tests). */
  function superseded() {
    view.ignored += 1;
    $('hm-stage').dataset.ignored = String(view.ignored);
  }

  /** Draws the map the controls ask for now, over the page it belongs to. */
  async function showHeatmap() {
    const page = $('hm-page').value;
    if (!page) {
      $('hm-message').textContent = 'No page has events yet.';
      return;
    }
    view.generation += 1;
    const generation = view.generation;
    const current = () => generation === view.generation;
    const state = {
      page,
      kind: $('hm-kind').value,
      width: $('hm-width').value,
      range: $('hm-range').value,
      shot: $('hm-shot').files[0] || null,
      site: $('hm-site').value.trim().replace(/\/$/, ''),
    };
    const stage = $('hm-stage');
    const overlay = $('hm-overlay');
    const canvas = $('hm-canvas');
    // Nothing of the previous choice stays on screen while this one loads.
    overlay.hidden = true;
    canvas.hidden = true;
    stage.hidden = false;
    stage.dataset.state = 'loading';
    stage.dataset.kind = state.kind;
    stage.dataset.generation = String(generation);
    $('hm-message').textContent = `Loading the ${KIND_NAMES[state.kind] || state.kind} of ${page}…`;

    const doc = await showPageLayer(state);
    if (!current()) { superseded(); return; }
    const params = new URLSearchParams({ page, kind: state.kind, width: state.width });
    if (state.range) params.set('range', state.range);
    try {
      if (doc && state.kind !== 'scroll') {
        await placeOnElements(params, state, doc, current);
      } else {
        await drawServerMap(params, state, doc, current);
      }
    } catch (err) {
      if (!current()) { superseded(); return; }
      stage.dataset.state = 'failed';
      $('hm-message').textContent = `The ${KIND_NAMES[state.kind]} map could not be loaded: ${err.message || err}`;
    }
  }

  /**
   * Shows what the heat is drawn over, sized as itself: the uploaded screenshot at the
   * stage's width, or the page in a frame as tall as its document. Returns the framed
   * document when it can be read (same origin), else null.
   */
  async function showPageLayer(state) {
    const frame = $('hm-frame');
    const screenshot = $('hm-screenshot');
    if (state.shot) {
      // Where the site forbids framing: the heat over an uploaded screenshot instead.
      frame.hidden = true;
      if (view.shot !== state.shot) {
        if (view.shotUrl) URL.revokeObjectURL(view.shotUrl);
        view.shot = state.shot;
        view.shotUrl = URL.createObjectURL(state.shot);
        screenshot.src = view.shotUrl;
      }
      screenshot.hidden = false;
      try { await screenshot.decode(); } catch (_) { /* drawn anyway; the message says if nothing shows */ }
      return null;
    }
    screenshot.hidden = true;
    frame.hidden = false;
    const url = `${state.site}${state.page}`;
    if (view.frameUrl !== url) {
      view.frameUrl = url;
      // Measured afresh: a frame kept as tall as the last page would never fit a shorter one.
      frame.style.height = '';
      view.frameLoaded = new Promise((resolve) => {
        const timer = setTimeout(resolve, FRAME_LOAD_TIMEOUT_MS);
        frame.addEventListener('load', () => { clearTimeout(timer); resolve(); }, { once: true });
      });
      frame.src = url;
    }
    await view.frameLoaded;
    let doc = null;
    try { doc = frame.contentDocument; } catch (_) { doc = null; }
    if (!doc || !doc.documentElement) return null;
    frame.style.height = `${doc.documentElement.scrollHeight}px`;
    return doc;
  }

  /** The server's drawing, stretched over the page layer (fractions of the document). */
  async function drawServerMap(params, state, doc, current) {
    params.set('output', 'overlay');
    const response = await fetch(`/api/heatmaps?${params}`);
    const failure = response.ok ? null : await errorOf(response);
    const blob = response.ok ? await response.blob() : null;
    if (!current()) { superseded(); return; }
    if (failure) { showEmpty(state, failure); return; }
    const overlay = $('hm-overlay');
    if (view.overlayUrl) URL.revokeObjectURL(view.overlayUrl);
    view.overlayUrl = URL.createObjectURL(blob);
    overlay.src = view.overlayUrl;
    try { await overlay.decode(); } catch (_) { /* shown as it is */ }
    if (!current()) { superseded(); return; }
    const frame = $('hm-frame');
    if (!state.shot && !doc && overlay.naturalWidth > 0) {
      // A page of another origin cannot be measured: the map's own proportions then.
      frame.style.height = `${Math.round(frame.clientWidth * overlay.naturalHeight / overlay.naturalWidth)}px`;
    }
    overlay.hidden = false;
    shown(state, 'image', state.kind === 'scroll'
      ? 'Scroll depth: the page is veiled more deeply where fewer visitors scrolled.'
      : `The ${KIND_NAMES[state.kind]} of ${state.page} at their recorded positions.`);
  }

  /**
   * Clicks or moves placed on their elements in the live page: an event recorded on
   * `#buy-pro` is drawn on `#buy-pro` wherever the layout puts it now, at its offset
   * inside it. Events whose element is gone fall back to their recorded document position.
   */
  async function placeOnElements(params, state, doc, current) {
    params.set('format', 'points');
    const response = await fetch(`/api/heatmaps?${params}`);
    const failure = response.ok ? null : await errorOf(response);
    const listed = response.ok ? await response.json() : null;
    if (!current()) { superseded(); return; }
    if (failure) { showEmpty(state, failure); return; }
    const docWidth = doc.documentElement.scrollWidth;
    const docHeight = doc.documentElement.scrollHeight;
    const frameWindow = doc.defaultView;
    const scrollX = frameWindow ? frameWindow.scrollX : 0;
    const scrollY = frameWindow ? frameWindow.scrollY : 0;
    let onElement = 0;
    const points = listed.points.map((point) => {
      let element = null;
      try { element = point.path ? doc.querySelector(point.path) : null; } catch (_) { element = null; }
      if (element) {
        const box = element.getBoundingClientRect();
        if (box.width > 0 && box.height > 0) {
          onElement += 1;
          return [box.left + scrollX + point.ox * box.width, box.top + scrollY + point.oy * box.height];
        }
      }
      return [(point.x / point.dw) * docWidth, (point.y / point.dh) * docHeight];
    });
    const canvas = $('hm-canvas');
    drawDensity(canvas, points, docWidth, docHeight);
    canvas.hidden = false;
    const noun = KIND_NAMES[state.kind];
    const sample = listed.events > points.length ? ` (the latest ${points.length.toLocaleString()} of ${listed.events.toLocaleString()})` : '';
    shown(state, 'elements', `${onElement} of ${points.length} ${noun} placed on their elements in the live page${sample}; ${listed.sessions} ${listed.sessions === 1 ? 'session' : 'sessions'}, ${rangeName(state.range)}.`);
  }

  function shown(state, source, message) {
    const stage = $('hm-stage');
    stage.dataset.state = 'shown';
    stage.dataset.shown = state.kind;
    stage.dataset.source = source;
    $('hm-message').textContent = message;
  }

  function showEmpty(state, failure) {
    const stage = $('hm-stage');
    stage.dataset.state = 'empty';
    stage.dataset.shown = state.kind;
    stage.dataset.source = 'none';
    $('hm-message').textContent = failure;
  }

  /** The API's error sentence, or the status when the body has none. */
  async function errorOf(response) {
    try {
      const body = await response.json();
      if (body && body.error) return `${body.error.charAt(0).toUpperCase()}${body.error.slice(1)}.`;
    } catch (_) { /* no JSON body */ }
    return `The map could not be loaded (HTTP ${response.status}).`;
  }

  function rangeName(range) {
    return { '': 'all time', '24h': 'last 24 hours', '7d': 'last 7 days', '30d': 'last 30 days' }[range] || range;
  }

  /** Gaussian splats on a quarter-resolution grid, coloured like the renderer's jet map. */
  function drawDensity(canvas, points, width, height) {
    const SCALE = 4;
    const SIGMA = 3;
    const w = Math.ceil(width / SCALE);
    const h = Math.ceil(height / SCALE);
    const grid = new Float32Array(w * h);
    const reach = SIGMA * 3;
    for (const [x, y] of points) {
      const cx = Math.round(x / SCALE);
      const cy = Math.round(y / SCALE);
      for (let dy = -reach; dy <= reach; dy += 1) {
        for (let dx = -reach; dx <= reach; dx += 1) {
          const gx = cx + dx;
          const gy = cy + dy;
          if (gx < 0 || gy < 0 || gx >= w || gy >= h) continue;
          grid[gy * w + gx] += Math.exp(-(dx * dx + dy * dy) / (2 * SIGMA * SIGMA));
        }
      }
    }
    const max = grid.reduce((a, b) => Math.max(a, b), 0) || 1;
    const stops = [[0, 0, 143], [0, 0, 255], [0, 128, 255], [0, 255, 255], [128, 255, 128], [255, 255, 0], [255, 128, 0], [255, 0, 0], [128, 0, 0]];
    const small = document.createElement('canvas');
    small.width = w;
    small.height = h;
    const image = small.getContext('2d').createImageData(w, h);
    grid.forEach((value, idx) => {
      const intensity = Math.sqrt(value / max);
      const position = intensity * (stops.length - 1);
      const lower = Math.min(Math.floor(position), stops.length - 2);
      const t = position - lower;
      const colour = stops[lower].map((c, channel) => c + t * (stops[lower + 1][channel] - c));
      const alpha = Math.max(0, Math.min(1, (intensity - 0.02) / 0.33));
      image.data.set([colour[0], colour[1], colour[2], alpha * 255], idx * 4);
    });
    small.getContext('2d').putImageData(image, 0, 0);
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext('2d');
    context.imageSmoothingEnabled = true;
    context.drawImage(small, 0, 0, width, height);
  }

    /** One fetch at load, so the numbers show before the first push arrives. */
  async function firstLook() {
    try {
      const [summary, sessions] = await Promise.all(
        ['/api/analytics/summary', '/api/analytics/sessions'].map((url) => fetch(url).then((r) => r.json())),
      );
      if (Array.isArray(sessions) && summary.per_second) show(summary, sessions.slice(0, 50));
    } catch (_) {
      // The push will fill everything in once the renderer answers.
    }
  }

  firstLook();
  connect();
})();
