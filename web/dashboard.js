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

  $('hm-show').addEventListener('click', () => {
    const page = $('hm-page').value;
    if (!page) {
      $('hm-message').textContent = 'No page has events yet.';
      return;
    }
    const kind = $('hm-kind').value;
    const width = $('hm-width').value;
    const params = new URLSearchParams({ page, kind, width, output: 'overlay' });
    const overlay = $('hm-overlay');
    const shot = $('hm-shot').files[0];
    const frame = $('hm-frame');
    const screenshot = $('hm-screenshot');
    if (shot) {
      // Where the site forbids framing: the heat over an uploaded screenshot instead.
      screenshot.src = URL.createObjectURL(shot);
      screenshot.hidden = false;
      frame.hidden = true;
    } else {
      const site = $('hm-site').value.trim().replace(/\/$/, '');
      frame.src = `${site}${page}`;
      frame.hidden = false;
      screenshot.hidden = true;
    }
        const canvas = $('hm-canvas');
    canvas.hidden = true;
    overlay.hidden = false;
    overlay.onload = () => {
      $('hm-message').textContent = '';
      frame.style.height = `${overlay.clientHeight}px`;
    };
    overlay.onerror = () => { $('hm-message').textContent = `No ${kind} events for ${page} at ${width} widths yet.`; };
    overlay.src = `/api/heatmaps?${params}`;
    $('hm-stage').hidden = false;
    if (kind === 'click' && !shot) {
      frame.onload = () => placeClicksOnElements(page, width).catch(() => { /* keep the server's overlay */ });
    }
  });

  /**
   * Clicks placed on their elements in the live page: a click recorded on `#buy-pro` is
   * drawn on `#buy-pro` wherever the layout puts it now. Needs a same-origin frame; clicks
   * whose element is gone fall back to their recorded document position.
   */
  async function placeClicksOnElements(page, width) {
    const frame = $('hm-frame');
    const doc = frame.contentDocument;
    if (!doc || !doc.documentElement) return;
    const params = new URLSearchParams({ page, kind: 'click', width, format: 'clicks' });
    const response = await fetch(`/api/heatmaps?${params}`);
    if (!response.ok) return;
    const { clicks } = await response.json();
    const docWidth = doc.documentElement.scrollWidth;
    const docHeight = doc.documentElement.scrollHeight;
    frame.style.height = `${docHeight}px`;
    let onElement = 0;
    const points = clicks.map((click) => {
      let element = null;
      try { element = click.path ? doc.querySelector(click.path) : null; } catch (_) { element = null; }
      if (element) {
        const box = element.getBoundingClientRect();
        if (box.width > 0 && box.height > 0) {
          onElement += 1;
          return [box.left + click.ox * box.width, box.top + click.oy * box.height];
        }
      }
      return [(click.x / click.dw) * docWidth, (click.y / click.dh) * docHeight];
    });
    drawDensity($('hm-canvas'), points, docWidth, docHeight);
    $('hm-overlay').hidden = true;
    $('hm-canvas').hidden = false;
    $('hm-message').textContent = `${onElement} of ${clicks.length} clicks placed on their elements in the live page.`;
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
