// The recorder page: records pointer moves and clicks between Start and Stop, sends them
// to the relay in numbered batches, resends whatever the renderer has not acknowledged
// after any reconnect, and shows the heatmaps the renderer writes.
'use strict';

(() => {
  const PROTOCOL_VERSION = 1;
  /** Send a batch every 50 ms, or sooner once it holds 100 points. */
  const FLUSH_MS = 50;
  const FLUSH_POINTS = 100;
  /** Batches kept for resending; past this, recording pauses rather than losing points silently. */
  const MAX_UNACKED = 500;
  /** Points held back while the backlog is full; beyond this they are counted as dropped. */
  const MAX_HELD_POINTS = 5000;
  /** A batch unacknowledged for this long is resent (for example after `rate_limited`). */
  const RESEND_AFTER_MS = 3000;
  /** How often the live preview asks for a new frame while recording (at least twice a second). */
  const PREVIEW_EVERY_MS = 400;
  /** A preview request unanswered for this long is forgotten, so the next one may go. */
  const PREVIEW_TIMEOUT_MS = 2000;
  /** A Generate unanswered for this long is resent; the renderer draws one image per request. */
  const GENERATE_RESEND_MS = 15000;
  const SETTINGS_KEY = 'heatmap-recorder-settings';
  const BACKOFF_INITIAL_MS = 100;
  const BACKOFF_MAX_MS = 5000;

  const $ = (id) => document.getElementById(id);
  const ui = {
    start: $('start'),
    stop: $('stop'),
    generate: $('generate'),
    recordingState: $('recording-state'),
    pointsRecorded: $('points-recorded'),
    pointsStored: $('points-stored'),
    batchesPending: $('batches-pending'),
    message: $('message'),
    result: $('result'),
    heatmapName: $('heatmap-name'),
    heatmapMeta: $('heatmap-meta'),
    heatmapImage: $('heatmap-image'),
    gallerySection: $('gallery-section'),
    gallery: $('gallery'),
    settingsForm: $('settings-form'),
    previewSection: $('preview-section'),
    previewMeta: $('preview-meta'),
        preview: $('preview'),
  };

  /** Who is here, by name (presence.js); it sends through this page's socket. */
  const members = window.heatmapPresence.create($('members'), (msg) => send(msg));

  const state = {
    socket: null,
    relay: 'connecting',
    renderer: 'disconnected',
    backoffMs: BACKOFF_INITIAL_MS,
    /** The recording in progress or the latest one: {id, startedAt, nextSeq, stopped, stopConfirmed}. */
    recording: null,
    /** Points not yet put into a batch. */
    buffer: [],
    /** Batches sent but not acknowledged: seq -> {frame, sentAt}. */
    unacked: new Map(),
    pointsRecorded: 0,
    pointsStored: 0,
    pointsDropped: 0,
    awaitingHeatmap: false,
    /**
     * The Generate waiting for its answer: {request, frame, sentAt, retry}. Kept like an
     * unacknowledged batch and resent after a reconnect, a timeout or `renderer_unavailable`.
     */
    pendingGenerate: null,
    /** The page's next Generate request number. */
    nextRequest: 1,
    /** When the pending preview request was sent (0: none pending). */
    previewSentAt: 0,
    lastPreviewAt: 0,
    lastCursorAt: 0,
  };

  // ---- Links -------------------------------------------------------------------------

  const LINK_LABELS = { 'browser-relay': 'Browser ↔ Relay', 'relay-renderer': 'Relay ↔ Renderer' };

  function setLink(link, linkState, text) {
    const element = document.querySelector(`[data-link="${link}"]`);
    element.dataset.state = linkState;
    element.querySelector('.label').textContent = `${LINK_LABELS[link]}: ${text || linkState}`;
  }

  function connect() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/ws`);
    state.socket = socket;
    state.relay = 'connecting';
    setLink('browser-relay', 'connecting');

    socket.addEventListener('open', () => {
      state.relay = 'connected';
      state.backoffMs = BACKOFF_INITIAL_MS;
      setLink('browser-relay', 'connected');
      send({ type: 'hello', v: PROTOCOL_VERSION });
    });
    socket.addEventListener('message', (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (err) {
        showMessage(`The relay sent something unreadable: ${err}`, 'error');
        return;
      }
      handle(msg);
    });
    socket.addEventListener('close', (event) => {
      if (state.socket !== socket) return;
      state.socket = null;
      state.relay = 'disconnected';
      state.renderer = 'disconnected';
      setLink('browser-relay', 'disconnected');
      setLink('relay-renderer', 'disconnected', 'unknown');
      if (event.code === 1009) showMessage('The relay closed the connection: a message was too large.', 'error');
      else if (state.pendingGenerate) showMessage('Connection lost; your heatmap will be asked for again after reconnecting…');
      // Jittered exponential back-off, like the relay's own reconnects.
      const delay = state.backoffMs * (0.5 + Math.random() / 2);
      state.backoffMs = Math.min(state.backoffMs * 2, BACKOFF_MAX_MS);
      setTimeout(connect, delay);
    });
  }

  function send(msg) {
    return sendText(JSON.stringify(msg));
  }

  function sendText(text) {
    if (!state.socket || state.socket.readyState !== WebSocket.OPEN) return false;
    state.socket.send(text);
    return true;
  }

  function rendererUp() {
    return state.relay === 'connected' && state.renderer === 'connected';
  }

  function setRenderer(linkState) {
    state.renderer = linkState;
    setLink('relay-renderer', linkState);
    updateButtons();
  }

  /**
   * After (re)connecting to the relay: make sure the renderer gets the recording and every
   * unacknowledged batch. While the renderer is away the relay holds them and replays them
   * when it is back; anything lost on the way is resent once it is overdue.
   */
  function resync() {
    const recording = state.recording;
    if (!recording) return;
    send({ type: 'start', recording: recording.id, viewport: viewport() });
    resendUnacked(0);
    if (recording.stopped && !recording.stopConfirmed) send({ type: 'stop', recording: recording.id });
    // After the batches, so the renderer holds them all before it renders.
    if (state.pendingGenerate) sendGenerate();
  }

  /** Sends (or resends) the pending Generate; the same request number makes it idempotent. */
  function sendGenerate() {
    const pending = state.pendingGenerate;
    if (!pending || !sendText(pending.frame)) return;
    pending.sentAt = performance.now();
    pending.retry = false;
  }

  function resendUnacked(olderThanMs) {
    const now = performance.now();
    const seqs = [...state.unacked.keys()].sort((a, b) => a - b);
    for (const seq of seqs) {
      const batch = state.unacked.get(seq);
      if (now - batch.sentAt < olderThanMs) continue;
      if (!sendText(batch.frame)) return;
      batch.sentAt = now;
    }
  }

  // ---- Messages from the relay ---------------------------------------------------------

  function handle(msg) {
    const recording = state.recording;
    const ours = recording && msg.recording === recording.id;
    switch (msg.type) {
      case 'welcome':
        setRenderer(msg.renderer);
        resync();
        break;
      case 'link':
        setRenderer(msg.renderer);
        if (state.pendingGenerate) {
          if (msg.renderer === 'connected' && state.pendingGenerate.retry) sendGenerate();
          else if (msg.renderer !== 'connected') showMessage('The renderer went away; retrying your heatmap once it is back…');
        }
        break;
      case 'started':
        break;
      case 'presence':
        // The count and the names, with joins and leaves, are presence.js's to show.
        members.handle(msg);
        return;
      case 'cursors':
        drawCursors(msg.cursors);
        return;
      case 'ack':
        if (ours) {
          state.unacked.delete(msg.seq);
          state.pointsStored = Math.max(state.pointsStored, msg.n_points);
          flushHeldPoints();
        }
        break;
      case 'stopped':
        if (ours) {
          recording.stopConfirmed = true;
          state.pointsStored = Math.max(state.pointsStored, msg.n_points);
        }
        break;
      case 'heatmap':
        if (msg.request !== undefined) {
          // A repeated answer (the request was resent) is harmless: show each request once.
          if (!state.pendingGenerate || msg.request !== state.pendingGenerate.request) return;
          state.pendingGenerate = null;
        }
        state.awaitingHeatmap = false;
        showHeatmap(msg);
        break;
      case 'preview':
        state.previewSentAt = 0;
        if (ours) drawPreview(msg);
        return;
      case 'error':
        if (members.handle(msg)) return;
        handleError(msg);
        break;
      // The members list (docs/protocol.md, "Members"): drawn by presence.js.
      case 'members':
      case 'user_join':
      case 'user_leave':
        members.handle(msg);
        return;
      default:
        console.warn('unknown message from the relay', msg);
    }
    updateCounters();
    updateButtons();
  }

  function handleError(msg) {
    // Answers to a numbered Generate first: its `busy` is not a preview's.
    const pending = state.pendingGenerate;
    if (msg.request !== undefined) {
      if (!pending || msg.request !== pending.request) return;
      if (['renderer_unavailable', 'busy'].includes(msg.code)) {
        // Passing: resent once the renderer link is connected again.
        pending.retry = true;
        showMessage('The renderer stopped before drawing your heatmap; retrying once it is back…');
        return;
      }
      state.pendingGenerate = null;
    }
    // Preview requests are best-effort: a busy or failed one is simply asked again.
    if (state.previewSentAt && msg.seq === undefined && ['busy', 'unknown_recording'].includes(msg.code)) {
      state.previewSentAt = 0;
      return;
    }
    // Batches refused for a passing reason stay in `unacked` and are resent later.
    const passing = ['renderer_unavailable', 'rate_limited', 'busy', 'storage_failed'];
    if (passing.includes(msg.code) && msg.seq !== undefined) return;
    if (msg.seq !== undefined && state.recording && msg.recording === state.recording.id) {
      // A batch refused for good (out of range, too large, recording full): resending cannot help.
      state.unacked.delete(msg.seq);
    }
    if (state.awaitingHeatmap && msg.seq === undefined) state.awaitingHeatmap = false;
    const hints = {
      no_points: 'Nothing to draw yet: press Start Recording and move the pointer over the page first.',
      renderer_unavailable: 'The renderer is not connected; try again once the Relay ↔ Renderer light is green.',
    };
    showMessage(hints[msg.code] || `${msg.code}: ${msg.message}`, 'error');
  }

  // ---- Recording -----------------------------------------------------------------------

  function viewport() {
    return { width: Math.max(1, window.innerWidth), height: Math.max(1, window.innerHeight) };
  }

  function newRecordingId() {
    const random = new Uint32Array(2);
    crypto.getRandomValues(random);
    return `r-${Date.now().toString(36)}-${random[0].toString(36)}${random[1].toString(36)}`;
  }

  function startRecording() {
    state.recording = {
      id: newRecordingId(),
      startedAt: performance.now(),
      nextSeq: 0,
      stopped: false,
      stopConfirmed: false,
    };
    state.buffer = [];
    state.unacked.clear();
    state.pointsRecorded = 0;
    state.pointsStored = 0;
    state.pointsDropped = 0;
    send({ type: 'start', recording: state.recording.id, viewport: viewport() });
    showMessage('');
    updateButtons();
    updateCounters();
  }

  function stopRecording() {
    const recording = state.recording;
    if (!recording || recording.stopped) return;
    flush();
    recording.stopped = true;
    send({ type: 'stop', recording: recording.id });
    updateButtons();
    updateCounters();
  }

  function generate() {
    const recording = state.recording;
    if (!recording) {
      showMessage('Record something first: press Start Recording.', 'error');
      return;
    }
    flush();
    if (!rendererUp()) {
      showMessage('The renderer is not connected; try again once the Relay ↔ Renderer light is green.', 'error');
      return;
    }
    state.awaitingHeatmap = true;
    showMessage('Rendering…');
    const request = state.nextRequest++;
    const frame = JSON.stringify({ type: 'generate', recording: recording.id, request, options: renderOptions() });
    state.pendingGenerate = { request, frame, sentAt: 0, retry: false };
    sendGenerate();
    updateButtons();
  }

  function isRecording() {
    return state.recording !== null && !state.recording.stopped;
  }

  function record(event, kind) {
    if (!isRecording()) return;
    const { width, height } = viewport();
    const x = Math.min(Math.max(event.clientX, 0), width);
    const y = Math.min(Math.max(event.clientY, 0), height);
    const t = Math.max(0, Math.round(performance.now() - state.recording.startedAt));
    if (state.buffer.length >= MAX_HELD_POINTS) {
      state.pointsDropped += 1;
      return;
    }
    state.buffer.push([Math.round(x * 10) / 10, Math.round(y * 10) / 10, t, kind]);
    state.pointsRecorded += 1;
    if (state.buffer.length >= FLUSH_POINTS) flush();
  }

  /** Turns buffered points into numbered batches and sends them (if the backlog allows). */
  function flush() {
    const recording = state.recording;
    while (recording && state.buffer.length > 0 && state.unacked.size < MAX_UNACKED) {
      const points = state.buffer.splice(0, FLUSH_POINTS);
      const seq = recording.nextSeq++;
      const frame = JSON.stringify({ type: 'points', recording: recording.id, seq, viewport: viewport(), points });
      state.unacked.set(seq, { frame, sentAt: performance.now() });
      sendText(frame);
    }
    updateCounters();
  }

  function flushHeldPoints() {
    if (state.buffer.length >= FLUSH_POINTS) flush();
  }

    document.addEventListener('pointermove', (event) => record(event, 'move'), { passive: true });

  // ---- Live cursors --------------------------------------------------------------------

  /** At most ten cursor updates a second; the relay never sends a page its own. */
  const CURSOR_EVERY_MS = 100;
  document.addEventListener('pointermove', (event) => {
    const now = performance.now();
    if (now - state.lastCursorAt < CURSOR_EVERY_MS) return;
    state.lastCursorAt = now;
    const { width, height } = viewport();
    const x = Math.min(1, Math.max(0, event.clientX / width));
    const y = Math.min(1, Math.max(0, event.clientY / height));
    send({ type: 'cursor', x: Math.round(x * 1000) / 1000, y: Math.round(y * 1000) / 1000 });
  }, { passive: true });

  const cursorLayer = document.createElement('div');
  cursorLayer.id = 'cursors';
  cursorLayer.setAttribute('aria-hidden', 'true');
  document.body.append(cursorLayer);
  const CURSOR_COLOURS = ['#e11d48', '#7c3aed', '#0891b2', '#16a34a', '#ea580c', '#db2777'];

  function drawCursors(cursors) {
    const { width, height } = viewport();
    const dots = cursors.map((cursor) => {
      const dot = document.createElement('span');
      dot.className = 'cursor';
      dot.dataset.id = cursor.id;
      dot.style.left = `${cursor.x * width}px`;
      dot.style.top = `${cursor.y * height}px`;
      dot.style.background = CURSOR_COLOURS[cursor.id % CURSOR_COLOURS.length];
      return dot;
    });
    cursorLayer.replaceChildren(...dots);
  }
  document.addEventListener('pointerdown', (event) => {
    // Presses on the recorder's own buttons are not part of what the page's visitor did.
    if (event.button !== 0 || event.target.closest('button')) return;
    record(event, 'click');
  }, { passive: true });

  setInterval(() => {
    if (isRecording()) flush();
    if (rendererUp()) resendUnacked(RESEND_AFTER_MS);
    const pending = state.pendingGenerate;
    if (pending && rendererUp() && (pending.retry || performance.now() - pending.sentAt > GENERATE_RESEND_MS)) sendGenerate();
    if (isRecording()) requestPreview();
  }, FLUSH_MS);

  // ---- Settings ------------------------------------------------------------------------

  /** The settings panel's choices as render options; empty choices are left to the renderer. */
  function renderOptions() {
    const options = {};
    const form = new FormData(ui.settingsForm);
    for (const name of ['kind', 'colormap', 'scale', 'output']) {
      const value = form.get(name);
      if (value) options[name] = value;
    }
    const bandwidth = Number(form.get('bandwidth'));
    if (form.get('bandwidth') && bandwidth >= 1 && bandwidth <= 200) options.bandwidth = bandwidth;
    return options;
  }

  function loadSettings() {
    let saved = {};
    try {
      saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) || '{}');
    } catch (_) {
      saved = {};
    }
    for (const [name, value] of Object.entries(saved)) {
      const field = ui.settingsForm.elements.namedItem(name);
      if (field) field.value = value;
    }
  }

  ui.settingsForm.addEventListener('change', () => {
    const values = Object.fromEntries(new FormData(ui.settingsForm));
    try {
      localStorage.setItem(SETTINGS_KEY, JSON.stringify(values));
    } catch (_) {
      // Private windows may refuse storage; the settings still apply to this page.
    }
  });

  // ---- Live preview --------------------------------------------------------------------

  function requestPreview() {
    const now = performance.now();
    if (!rendererUp() || now - state.lastPreviewAt < PREVIEW_EVERY_MS) return;
    if (state.previewSentAt && now - state.previewSentAt < PREVIEW_TIMEOUT_MS) return;
    const kind = renderOptions().kind;
    const msg = { type: 'preview', recording: state.recording.id };
    if (kind) msg.kind = kind;
    if (send(msg)) {
      state.previewSentAt = now;
      state.lastPreviewAt = now;
    }
  }

  /** jet, as in the renderer's default map: cold blue to hot dark red. */
  const PREVIEW_STOPS = [[0, 0, 143], [0, 0, 255], [0, 128, 255], [0, 255, 255], [128, 255, 128],
    [255, 255, 0], [255, 128, 0], [255, 0, 0], [128, 0, 0]];
  const PREVIEW_LUT = Array.from({ length: 256 }, (_, idx) => {
    const position = (idx / 255) * (PREVIEW_STOPS.length - 1);
    const lower = Math.min(Math.floor(position), PREVIEW_STOPS.length - 2);
    const t = position - lower;
    return PREVIEW_STOPS[lower].map((value, channel) => Math.round(value + t * (PREVIEW_STOPS[lower + 1][channel] - value)));
  });

  function drawPreview(msg) {
    const canvas = ui.preview;
    canvas.width = msg.width;
    canvas.height = msg.height;
    const context = canvas.getContext('2d');
    const image = context.createImageData(msg.width, msg.height);
    msg.cells.forEach((value, idx) => {
      const [r, g, b] = PREVIEW_LUT[value];
      const alpha = Math.max(0, Math.min(1, (value / 255 - 0.02) / 0.33));
      image.data.set([r, g, b, Math.round(alpha * 255)], idx * 4);
    });
    context.putImageData(image, 0, 0);
    ui.previewSection.hidden = false;
    ui.previewMeta.textContent = `(${msg.n_points.toLocaleString()} points)`;
  }

  // ---- Display -------------------------------------------------------------------------

  function showMessage(text, kind) {
    ui.message.textContent = text;
    ui.message.dataset.kind = kind || 'info';
  }

  function showHeatmap(msg) {
    const url = `/heatmaps/${encodeURIComponent(msg.name)}`;
    ui.heatmapImage.src = url;
    ui.heatmapImage.dataset.output = (msg.options && msg.options.output) || 'image';
    ui.heatmapName.textContent = msg.name;
    const options = msg.options || {};
    const look = [options.kind, options.colormap, options.scale && `${options.scale} scale`, options.output]
      .filter(Boolean).join(', ');
    ui.heatmapMeta.textContent =
      `${msg.n_points.toLocaleString()} points · ${msg.width}×${msg.height} · ${look} · rendered in ${msg.render_ms.toFixed(0)} ms`;
    ui.result.hidden = false;
    ui.gallerySection.hidden = false;
    const item = document.createElement('li');
    const link = document.createElement('a');
    link.href = url;
    link.target = '_blank';
    link.textContent = msg.name;
    item.append(link, ` (${msg.n_points.toLocaleString()} points)`);
    ui.gallery.prepend(item);
    showMessage(`Saved ${msg.name} in the renderer's output folder.`);
  }

  function updateButtons() {
    ui.start.disabled = isRecording();
    ui.stop.disabled = !isRecording();
    ui.generate.disabled = state.recording === null || state.awaitingHeatmap;
  }

  function updateCounters() {
    ui.pointsRecorded.textContent = state.pointsRecorded.toLocaleString();
    ui.pointsStored.textContent = state.pointsStored.toLocaleString();
    ui.batchesPending.textContent = state.unacked.size.toLocaleString();
    const recording = state.recording;
    let text = 'Not recording.';
    if (isRecording()) text = 'Recording… move and click anywhere on the page.';
    else if (recording) text = 'Stopped. Press Generate Heatmap to see it.';
    if (state.pointsDropped > 0) {
      text += ` ${state.pointsDropped.toLocaleString()} points could not be kept: the renderer has been unreachable too long.`;
    }
    ui.recordingState.textContent = text;
    ui.recordingState.dataset.recording = isRecording() ? 'recording' : (recording ? 'stopped' : 'idle');
  }

  ui.start.addEventListener('click', startRecording);
  ui.stop.addEventListener('click', stopRecording);
  ui.generate.addEventListener('click', generate);

  loadSettings();
  connect();
  updateButtons();
  updateCounters();
})();
