// The tracking snippet: one tag on any page,
//   <script src="http://RELAY/t.js" data-site="SITE" defer></script>
// records page views, sampled pointer moves, clicks, scroll depth, visibility changes and
// leaving, and sends them in batches to the relay's /api/events.
//
// Privacy: no text, no input values, no cookies. Do Not Track and Global Privacy Control
// turn it off, and so does `heatmapTracker.optOut()` (remembered in localStorage).
// What is sent: the page's path (no query string), a random per-tab session id, times,
// and positions with the viewport and document sizes they are relative to; for clicks
// also a short CSS path of the element (tag names, ids, positions among siblings) and
// where inside it the click fell.
'use strict';

(() => {
  const script = document.currentScript;
  if (!script) return;
  const endpoint = new URL('/api/events', script.src).href;
  const OPT_OUT_KEY = 'heatmap-opt-out';
  const SESSION_KEY = 'heatmap-session';
  /** A session ends after five minutes without events (the server applies the same rule). */
  const SESSION_TIMEOUT_MS = 5 * 60 * 1000;
  const FLUSH_MS = 2000;
  const MOVE_SAMPLE_MS = 100;
  const MAX_QUEUE = 500;

  const api = {
    optOut() {
      try { localStorage.setItem(OPT_OUT_KEY, '1'); } catch (_) { /* storage refused */ }
      stopped = true;
      queue.length = 0;
    },
    optIn() {
      try { localStorage.removeItem(OPT_OUT_KEY); } catch (_) { /* storage refused */ }
    },
    get tracking() { return !stopped; },
  };
  window.heatmapTracker = api;

  let stopped = navigator.doNotTrack === '1' || window.doNotTrack === '1' || navigator.globalPrivacyControl === true;
  try {
    if (localStorage.getItem(OPT_OUT_KEY) === '1') stopped = true;
  } catch (_) { /* storage refused: track anyway, nothing is stored */ }
  if (stopped) return;

  const queue = [];

  function sessionId() {
    const now = Date.now();
    let session = null;
    try { session = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null'); } catch (_) { session = null; }
    if (!session || now - session.last > SESSION_TIMEOUT_MS) {
      const random = new Uint32Array(2);
      crypto.getRandomValues(random);
      session = { id: `s-${now.toString(36)}-${random[0].toString(36)}${random[1].toString(36)}` };
    }
    session.last = now;
    try { sessionStorage.setItem(SESSION_KEY, JSON.stringify(session)); } catch (_) { /* per page then */ }
    return session.id;
  }

  function sizes() {
    const doc = document.documentElement;
    return {
      vw: window.innerWidth,
      vh: window.innerHeight,
      dw: Math.max(doc.scrollWidth, window.innerWidth),
      dh: Math.max(doc.scrollHeight, window.innerHeight),
    };
  }

  function track(type, metadata) {
    if (stopped || queue.length >= MAX_QUEUE) return;
    queue.push({ type, page: location.pathname, sessionId: sessionId(), timestamp: Date.now(), metadata });
  }

  /** A short CSS path: up to five ancestors, tag names with ids or positions, never text. */
  function cssPath(element) {
    const parts = [];
    for (let node = element; node && node.nodeType === 1 && parts.length < 5; node = node.parentElement) {
      let part = node.localName;
      if (node.id) {
        parts.unshift(`${part}#${CSS.escape(node.id)}`);
        break;
      }
      const parent = node.parentElement;
      if (parent) {
        const same = Array.from(parent.children).filter((child) => child.localName === node.localName);
        if (same.length > 1) part += `:nth-of-type(${same.indexOf(node) + 1})`;
      }
      parts.unshift(part);
    }
    return parts.join('>');
  }

  function send(useBeacon) {
    if (queue.length === 0) return;
    const body = JSON.stringify(queue.splice(0, queue.length));
    if (useBeacon && navigator.sendBeacon && navigator.sendBeacon(endpoint, body)) return;
    fetch(endpoint, { method: 'POST', body, keepalive: true, mode: 'cors', headers: { 'content-type': 'text/plain' } })
      .catch(() => { /* offline: these events are lost, as with any analytics beacon */ });
  }

  let lastMove = null;
  let lastSentMove = null;
  document.addEventListener('pointermove', (event) => { lastMove = event; }, { passive: true });
  setInterval(() => {
    if (lastMove && lastMove !== lastSentMove) {
      lastSentMove = lastMove;
      track('move', { x: lastMove.pageX, y: lastMove.pageY, ...sizes() });
    }
  }, MOVE_SAMPLE_MS);

  document.addEventListener('click', (event) => {
    const target = event.target instanceof Element ? event.target : null;
    const metadata = { x: event.pageX, y: event.pageY, ...sizes() };
    if (target) {
      const box = target.getBoundingClientRect();
      metadata.path = cssPath(target);
      if (box.width > 0 && box.height > 0) {
        metadata.ox = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
        metadata.oy = Math.min(1, Math.max(0, (event.clientY - box.top) / box.height));
      }
    }
    track('click', metadata);
    send(false);
  }, { passive: true, capture: true });

  let deepest = 0;
  let scrollTimer = null;
  function noteScroll() {
    const size = sizes();
    const depth = Math.min(1, (window.scrollY + size.vh) / size.dh);
    if (depth > deepest + 0.01) {
      deepest = depth;
      clearTimeout(scrollTimer);
      scrollTimer = setTimeout(() => track('scroll', { depth: deepest, ...sizes() }), 300);
    }
  }
  window.addEventListener('scroll', noteScroll, { passive: true });

  document.addEventListener('visibilitychange', () => {
    track('visibility', { visible: document.visibilityState === 'visible' });
    if (document.visibilityState === 'hidden') send(true);
  });
  window.addEventListener('pagehide', () => {
    track('leave', {});
    send(true);
  });

  track('pageview', sizes());
  noteScroll();
  send(false);
  setInterval(() => send(false), FLUSH_MS);
})();
