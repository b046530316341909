// The tracking snippet: one tag on any page,
//   <script src="http://RELAY/t.js" data-site="SITE" defer></script>
// records page views, sampled pointer moves, clicks, scroll depth, visibility changes and
// leaving, and sends them in batches to the relay's /api/events.
//
// Privacy: no text, no input values, no cookies. Do Not Track and Global Privacy Control
// turn it off, and so does `heatmapTracker.optOut()` (remembered in localStorage).
// What is sent: the page's path (no query string), a random per-tab session id, times,
// and positions with the viewport and document sizes they are relative to; for clicks and
// sampled moves also a short CSS path of the element under the pointer (tag names, ids,
// positions among siblings) and where inside it the pointer was; for clicks also whether
// anything answered them within a second (`dead`, see below).
//
// Delivery: every event gets its session's next number (`seq`) and its own time once, when
// it happens, and waits in an outbox kept in sessionStorage until the relay has answered
// 2xx for it, so a relay or renderer restart, a navigation or a reload loses nothing. The
// server counts an event with the same session, `seq` and time once, so resending after an
// unknown outcome (a timeout, a beacon, a reload mid-request) is always safe.
'use strict';

(() => {
  const script = document.currentScript;
  if (!script) return;
  const endpoint = new URL('/api/events', script.src).href;
  const OPT_OUT_KEY = 'heatmap-opt-out';
  const SESSION_KEY = 'heatmap-session';
  const OUTBOX_KEY = 'heatmap-outbox';
  /** A session ends after five minutes without events (the server applies the same rule). */
  const SESSION_TIMEOUT_MS = 5 * 60 * 1000;
  const FLUSH_MS = 2000;
  const MOVE_SAMPLE_MS = 100;
  /** Unsent events kept at most: about 15 minutes of a busy visit with the relay away. */
  const MAX_OUTBOX_EVENTS = 1000;
  /** Bytes of unsent events kept at most, well under sessionStorage's ~5 MB per site. */
  const MAX_OUTBOX_BYTES = 512 * 1024;
  /** Events in one request (the relay takes up to 500). */
  const MAX_BATCH_EVENTS = 200;
  /** Bytes in one request: a beacon may carry 64 KiB. */
  const MAX_BATCH_BYTES = 60 * 1024;
  /** The first retry waits about this long, each failure doubles it, up to the maximum. */
  const RETRY_FIRST_MS = 1000;
  const RETRY_MAX_MS = 60 * 1000;
  /** The shortest wait, even when the relay says `Retry-After: 0`. */
  const RETRY_MIN_MS = 250;
  /**
   * A click that nothing answers within this long (no change of the page, no navigation)
   * is a dead click, as Microsoft Clarity counts them: the element looks clickable but
   * is not. Each click waits this long for its verdict before it is queued.
   */
  const DEAD_CLICK_MS = 1000;
  /** Clicks waiting for their verdict at most; past it the oldest goes without one. */
  const MAX_PENDING_CLICKS = 20;
  // The browser's language (`en-IN`), sent with the first event of each request: its
  // region stands for the visitor's country where no proxy header gives one.
  const LOCALE = /^[A-Za-z0-9_-]{1,35}$/.test(navigator.language || '') ? navigator.language : null;

  const stats = { sent: 0, dropped: 0, retries: 0, lastStatus: null };
  const api = {
    optOut() {
      try { localStorage.setItem(OPT_OUT_KEY, '1'); } catch (_) { /* storage refused */ }
      stopped = true;
      clearOutbox();
    },
    optIn() {
      try { localStorage.removeItem(OPT_OUT_KEY); } catch (_) { /* storage refused */ }
    },
    get tracking() { return !stopped; },
    /**
     * A copy of the delivery counters, for tests and curious site owners: events waiting
     * (`queued`), delivered (`sent`), given up (`dropped`: the outbox was full or the
     * relay refused them as invalid), failed attempts that will be retried (`retries`) and
     * the last answer's status (0 for a network error).
     */
    get stats() { return { queued: outbox.length, ...stats }; },
  };
  window.heatmapTracker = api;

  /** Events not yet acknowledged, oldest first; the first `inFlight` are in a request now. */
  let outbox = [];
  /**
   * Clicks waiting (up to DEAD_CLICK_MS) to learn whether they were dead, oldest first.
   * They wait in the outbox, bounded and saved with the rest; only their sending waits.
   */
  const pendingClicks = [];
  let outboxBytes = 0;
  let inFlight = 0;
  /** Bumped when the outbox is reloaded, so a request from before cannot settle it. */
  let generation = 0;
  /** Failed attempts in a row, and the time before which no request is made. */
  let failures = 0;
  let retryAt = 0;
  let retryTimer = null;
  const warned = new Set();

  let stopped = navigator.doNotTrack === '1' || window.doNotTrack === '1' || navigator.globalPrivacyControl === true;
  try {
    if (localStorage.getItem(OPT_OUT_KEY) === '1') stopped = true;
  } catch (_) { /* storage refused: track anyway, nothing is stored */ }
  if (stopped) {
    clearOutbox();
    return;
  }

  function clearOutbox() {
    outbox = [];
    outboxBytes = 0;
    inFlight = 0;
    generation += 1;
    clearTimeout(retryTimer);
    try { sessionStorage.removeItem(OUTBOX_KEY); } catch (_) { /* storage refused */ }
  }

  const encoder = new TextEncoder();
  function bytesOf(event) {
    return encoder.encode(JSON.stringify(event)).length;
  }

  /** Writes the outbox and the back-off to sessionStorage, where the next page finds them. */
  function saveOutbox() {
    try {
      sessionStorage.setItem(OUTBOX_KEY, JSON.stringify({ events: outbox, failures, retryAt }));
    } catch (_) { /* storage refused or full: the events still wait in memory */ }
  }

  /** Takes over what earlier pages of this tab left unsent (of any session: each event names its own). */
  function loadOutbox() {
    let saved = null;
    try { saved = JSON.parse(sessionStorage.getItem(OUTBOX_KEY) || 'null'); } catch (_) { saved = null; }
    const events = saved && Array.isArray(saved.events) ? saved.events : [];
    outbox = events.filter((event) => event && typeof event === 'object').slice(-MAX_OUTBOX_EVENTS);
    outboxBytes = outbox.reduce((sum, event) => sum + bytesOf(event), 0);
    while (outboxBytes > MAX_OUTBOX_BYTES) dropAt(0);
    inFlight = 0;
    generation += 1;
    failures = saved && Number.isInteger(saved.failures) ? saved.failures : 0;
    retryAt = saved && Number.isFinite(saved.retryAt) ? Math.min(saved.retryAt, Date.now() + RETRY_MAX_MS) : 0;
  }

  function dropAt(idx) {
    outboxBytes -= bytesOf(outbox[idx]);
    outbox.splice(idx, 1);
    stats.dropped += 1;
  }

  /**
   * Makes room for an event of `bytes`, dropping the oldest waiting moves first, then the
   * oldest events (never those in a request now); false if the event itself must go.
   */
  function makeRoom(type, bytes) {
    const full = () => outbox.length >= MAX_OUTBOX_EVENTS || outboxBytes + bytes > MAX_OUTBOX_BYTES;
    while (full()) {
      let idx = outbox.findIndex((event, at) => at >= inFlight && event.type === 'move');
      if (idx < 0 && type === 'move') return false;
      if (idx < 0) idx = inFlight;
      if (idx >= outbox.length) return false;
      dropAt(idx);
    }
    return true;
  }

  /** The session's id and the next number in it, both kept per tab in sessionStorage. */
  function nextInSession() {
    const now = Date.now();
    let session = null;
    try { session = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null'); } catch (_) { session = null; }
    if (!session || typeof session.id !== 'string' || now - session.last > SESSION_TIMEOUT_MS) {
      const random = new Uint32Array(2);
      crypto.getRandomValues(random);
      session = { id: `s-${now.toString(36)}-${random[0].toString(36)}${random[1].toString(36)}` };
    }
    if (!Number.isInteger(session.seq) || session.seq < 0) session.seq = 0;
    const seq = session.seq;
    session.seq += 1;
    session.last = now;
    try { sessionStorage.setItem(SESSION_KEY, JSON.stringify(session)); } catch (_) { /* per page then */ }
    return { id: session.id, seq };
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
    const event = newEvent(type, metadata);
    if (event) enqueue(event);
  }

  /** An event numbered and timed now, when it happens, but not yet queued (null when stopped). */
  function newEvent(type, metadata) {
    if (stopped) return null;
    const session = nextInSession();
    return { type, page: location.pathname, sessionId: session.id, seq: session.seq, timestamp: Date.now(), metadata };
  }

  /** Puts the event in the outbox; false when it had to be dropped. */
  function enqueue(event) {
    if (stopped) return false;
    const type = event.type;
    const bytes = bytesOf(event);
    if (bytes > MAX_BATCH_BYTES || !makeRoom(type, bytes)) {
      stats.dropped += 1;
      return false;
    }
    outbox.push(event);
    outboxBytes += bytes;
    return true;
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

  /**
   * The end of the batch that starts at `from`: bounded in events and in bytes, and
   * before the first click still waiting for its verdict (it and what follows go later).
   */
  function batchEnd(from) {
    let end = from;
    let bytes = 2;
    while (end < outbox.length && end - from < MAX_BATCH_EVENTS && !pendingClicks.some((pending) => pending.event === outbox[end])) {
      const size = bytesOf(outbox[end]) + 1;
      if (bytes + size > MAX_BATCH_BYTES) break;
      bytes += size;
      end += 1;
    }
    return end;
  }

  /** Seconds or an HTTP date, as milliseconds from now; null when absent or unreadable. */
  function retryAfterMs(value) {
    if (!value) return null;
    const seconds = Number(value);
    const ms = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(value) - Date.now();
    return Number.isFinite(ms) ? Math.min(RETRY_MAX_MS, Math.max(0, ms)) : null;
  }

  /** A batch as sent: the first event of each session in it carries the browser's language. */
  function asSent(events) {
    if (!LOCALE) return events;
    const seen = new Set();
    return events.map((event) => {
      if (seen.has(event.sessionId)) return event;
      seen.add(event.sessionId);
      return { ...event, metadata: { ...event.metadata, locale: LOCALE } };
    });
  }

  /** What kind of device this is, from the screen and the pointer (no user agent). */
  function deviceClass() {
    const width = Math.min(window.screen.width || 0, window.screen.height || 0) || window.innerWidth;
    const coarse = window.matchMedia && window.matchMedia('(pointer: coarse)').matches;
    if (coarse && width < 600) return 'mobile';
    if (coarse) return 'tablet';
    return 'desktop';
  }

  /** The host of the page the visitor came from, when it is another site; never its path. */
  function referrerHost() {
    try {
      const host = new URL(document.referrer).host;
      return host && host !== location.host ? host : undefined;
    } catch (_) {
      return undefined;
    }
  }

  /** Sends the oldest waiting batch, unless one is on its way or the back-off says wait. */
  function flush() {
    if (stopped || inFlight > 0 || outbox.length === 0) return;
    const wait = retryAt - Date.now();
    if (wait > 0) {
      clearTimeout(retryTimer);
      retryTimer = setTimeout(flush, wait);
      return;
    }
    const end = batchEnd(0);
    // The oldest event is a click still waiting for its verdict: its timer flushes again.
    if (end === 0) return;
    inFlight = end;
    const sentGeneration = generation;
    const body = JSON.stringify(asSent(outbox.slice(0, inFlight)));
    saveOutbox();
    // Not `keepalive`: a request cut short by leaving the page is covered by the leave
    // beacon and by the next page sending the outbox again.
    fetch(endpoint, { method: 'POST', body, mode: 'cors', headers: { 'content-type': 'text/plain' } })
      .then(async (response) => {
        let text = '';
        try { text = await response.text(); } catch (_) { text = ''; }
        let error = null;
        if (!response.ok) {
          try { error = JSON.parse(text).error; } catch (_) { error = null; }
        }
        return { status: response.status, retryAfter: response.headers.get('retry-after'), error };
      }, () => ({ status: 0, retryAfter: null, error: null }))
      .then((answer) => {
        if (sentGeneration === generation) settle(answer);
      });
  }

  /** Acts on the answer to the batch in flight: remove it, drop it, or keep it and retry later. */
  function settle({ status, retryAfter, error }) {
    const n = inFlight;
    inFlight = 0;
    stats.lastStatus = status;
    if (status >= 200 && status < 300) {
      removeHead(n);
      stats.sent += n;
      failures = 0;
      retryAt = 0;
    } else if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
      // Refused as it is: sending it again cannot help. When the relay names the event at
      // fault (`event 3: …`), only that one goes and the rest are sent again at once.
      const named = /^event (\d+):/.exec(error || '');
      const idx = named ? Number(named[1]) : -1;
      if (idx >= 0 && idx < n) dropAt(idx);
      else { removeHead(n); stats.dropped += n; }
      if (!warned.has(status)) {
        warned.add(status);
        console.warn(`heatmap: the relay refused events (${status}): ${error || 'no reason given'}`);
      }
    } else {
      failures += 1;
      stats.retries += 1;
      const doubled = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(failures - 1, 16));
      const told = retryAfterMs(retryAfter);
      // The relay's Retry-After when it gives one (it knows when it will be back), else the
      // doubling delay; partly random either way, so that many tabs spread their retries.
      const wait = told !== null
        ? Math.max(RETRY_MIN_MS, told) + Math.random() * Math.min(1000, told / 2 + 100)
        : doubled / 2 + Math.random() * doubled / 2;
      retryAt = Date.now() + wait;
    }
    saveOutbox();
    flush();
  }

  function removeHead(n) {
    for (const event of outbox.splice(0, n)) outboxBytes -= bytesOf(event);
  }

  /**
   * On leaving or hiding, a beacon with the oldest waiting events, those in a request too
   * (leaving cancels it). They stay in the outbox: a beacon's fate is unknown, and the next
   * page's resend is counted once.
   */
  function beacon() {
    saveOutbox();
    const end = batchEnd(0);
    if (end > 0 && navigator.sendBeacon) {
      navigator.sendBeacon(endpoint, JSON.stringify(asSent(outbox.slice(0, end))));
    }
  }

  /**
   * The element under the pointer and where in it the pointer is (document position
   * `pageX`, `pageY`), so a heatmap can put the event back on that element wherever
   * another layout moves it; nothing when the target is not an element.
   */
  function anchorOf(target, pageX, pageY) {
    if (!(target instanceof Element)) return {};
    const anchor = { path: cssPath(target) };
    const box = target.getBoundingClientRect();
    if (box.width > 0 && box.height > 0) {
      anchor.ox = Math.min(1, Math.max(0, (pageX - window.scrollX - box.left) / box.width));
      anchor.oy = Math.min(1, Math.max(0, (pageY - window.scrollY - box.top) / box.height));
    }
    return anchor;
  }

  let lastMove = null;
  let lastSentMove = null;
  document.addEventListener('pointermove', (event) => { lastMove = event; }, { passive: true });
  setInterval(() => {
    if (lastMove && lastMove !== lastSentMove) {
      lastSentMove = lastMove;
      // Anchored when sampled, from the document position, so a scroll since the pointer
      // last moved does not shift it within its element.
      track('move', { x: lastMove.pageX, y: lastMove.pageY, ...sizes(), ...anchorOf(lastMove.target, lastMove.pageX, lastMove.pageY) });
    }
  }, MOVE_SAMPLE_MS);

  // Dead clicks. Each click waits DEAD_CLICK_MS for a sign that the page answered it: a
  // change of the DOM (a MutationObserver, connected only while clicks wait), a new URL
  // (a link within the page, `pushState`) or leaving the page (`pagehide`, or the tab
  // hidden, as a link opening a new tab does). It waits in the outbox meanwhile (bounded
  // and saved like every event), and no batch takes it or anything after it until it has
  // `dead: true` or `dead: false`; rage clicks are found by the server from the clicks.
  const observer = typeof MutationObserver === 'function'
    ? new MutationObserver(() => { for (const pending of pendingClicks) pending.answered = true; })
    : null;

  /** Gives the waiting click at `idx` its verdict (`null`: none, it was cut short) and lets it go. */
  function judgeClick(idx, dead) {
    const [pending] = pendingClicks.splice(idx, 1);
    clearTimeout(pending.timer);
    if (dead !== null) {
      const before = bytesOf(pending.event);
      pending.event.metadata.dead = dead;
      if (outbox.includes(pending.event)) outboxBytes += bytesOf(pending.event) - before;
    }
    if (pendingClicks.length === 0 && observer) observer.disconnect();
  }

  /**
   * The page is being left or hidden: that answers the latest click (a link, a button that
   * navigates). Earlier waiting clicks were followed by another click before anything
   * answered them, so they are judged on what they saw until now.
   */
  function answerAllClicks() {
    while (pendingClicks.length > 1) {
      const pending = pendingClicks[0];
      judgeClick(0, !pending.answered && location.href === pending.href);
    }
    if (pendingClicks.length === 1) judgeClick(0, false);
    flush();
  }

  document.addEventListener('click', (event) => {
    const click = newEvent('click', { x: event.pageX, y: event.pageY, ...sizes(), ...anchorOf(event.target, event.pageX, event.pageY) });
    if (!click || !enqueue(click)) return;
    if (!observer) {
      flush();
      return;
    }
    if (pendingClicks.length >= MAX_PENDING_CLICKS) judgeClick(0, null);
    if (pendingClicks.length === 0) {
      observer.observe(document.documentElement, { subtree: true, childList: true, attributes: true, characterData: true });
    }
    const pending = { event: click, href: location.href, answered: false, timer: null };
    pending.timer = setTimeout(() => {
      const idx = pendingClicks.indexOf(pending);
      if (idx < 0) return;
      // Mutations made just now may not have reached the observer's callback yet.
      if (observer.takeRecords().length > 0) for (const other of pendingClicks) other.answered = true;
      judgeClick(idx, !pending.answered && location.href === pending.href);
      flush();
    }, DEAD_CLICK_MS);
    pendingClicks.push(pending);
  }, { passive: true, capture: true });
  window.addEventListener('hashchange', () => { for (const pending of pendingClicks) pending.answered = true; });
  window.addEventListener('popstate', () => { for (const pending of pendingClicks) pending.answered = true; });

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
    if (document.visibilityState === 'hidden') answerAllClicks();
    track('visibility', { visible: document.visibilityState === 'visible' });
    if (document.visibilityState === 'hidden') beacon();
  });
  window.addEventListener('pagehide', () => {
    answerAllClicks();
    track('leave', {});
    beacon();
  });
  // Back from the back-forward cache: another page of this tab may have sent or added
  // events since, so the stored outbox is the truth.
  window.addEventListener('pageshow', (event) => {
    if (!event.persisted) return;
    loadOutbox();
    flush();
  });
  // The network is back: try now rather than at the end of the back-off.
  window.addEventListener('online', () => {
    retryAt = 0;
    flush();
  });

  loadOutbox();
  track('pageview', { ...sizes(), device: deviceClass(), referrer: referrerHost() });
  noteScroll();
  flush();
  setInterval(flush, FLUSH_MS);
})();
