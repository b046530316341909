// The live dashboard: numbers pushed by the relay once a second over a WebSocket (no
// polling), a 10-minute chart with a spike alert, a live feed, live sessions with a
// details dialog, filters that travel over the socket, history from the store for a date
// range, who else is here, and a page's heatmap laid over the page itself.
'use strict';

(() => {
  const BACKOFF_INITIAL_MS = 100;
  const BACKOFF_MAX_MS = 5000;
  /** Rows of the live feed; older ones are dropped as new ones arrive. */
  const FEED_ROWS = 50;
  /** Rows of the sessions table (the rest are counted under it). */
  const SESSION_ROWS = 50;
  /** Choices offered in the page and country filters. */
  const MAX_OPTIONS = 100;
  /** Session ids remembered to tell a new visitor (for the sound) from a known one. */
  const MAX_SEEN_SESSIONS = 10000;
  /** Bars of the chart: 60 of 10 seconds. */
  const CHART_BARS = 60;
  const CHART_BAR_SECONDS = 10;
  /** Pages of a session drawn as mini heatmaps in its dialog. */
  const DIALOG_PAGES = 4;
  /** A detailed_stats not answered in this long no longer blocks the next request. */
  const STATS_PATIENCE_MS = 20000;
  /** How often the history (totals and top lists of the chosen range) is read again. */
  const HISTORY_REFRESH_MS = 30000;
  /** Sooner than that when today's visitors change, but not more often than this. */
  const HISTORY_MIN_GAP_MS = 3000;
  const SOUND_KEY = 'heatmap.dashboard.sound';
  /** Alerts listed at once; older ones are dropped. */
  const MAX_ALERTS = 5;
  const $ = (id) => document.getElementById(id);

  const live = {
    socket: null,
    socketOpen: false,
    renderer: 'disconnected',
    backoffMs: BACKOFF_INITIAL_MS,
    /** The unfiltered summary and sessions of the latest push. */
    summary: null,
    sessions: [],
    /** The latest answer to this dashboard's own filter, while a page or country filter is on. */
    detailed: null,
    statsSentAt: 0,
    statsAnswers: 0,
    sessionsById: new Map(),
    seenSessions: new Set(),
    knownCountries: new Set(),
    knownFilterPages: new Set(),
    knownDevices: new Set(['desktop', 'tablet', 'mobile']),
    /** Events per 10-second bucket (epoch seconds / 10), as far back as this page has seen. */
    buckets: new Map(),
    firstBucket: null,
    sessionRowIds: [],
    feedSeeded: false,
    totalToday: undefined,
    historyAt: 0,
  };
  const knownPages = new Set();

  const LABELS = { 'browser-relay': 'Browser ↔ Relay', 'relay-renderer': 'Relay ↔ Renderer' };
  function setLink(link, state, text) {
    const element = document.querySelector(`[data-link="${link}"]`);
    element.dataset.state = state;
    element.querySelector('.label').textContent = `${LABELS[link]}: ${text || state}`;
  }

  /** Sends over the dashboard's socket; false while it is closed. */
  function send(msg) {
    if (!live.socket || live.socket.readyState !== WebSocket.OPEN) return false;
    live.socket.send(JSON.stringify(msg));
    return true;
  }

  const members = window.heatmapPresence.create($('members'), send);

  function connect() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/ws`);
    live.socket = socket;
    setLink('browser-relay', 'connecting');
    socket.addEventListener('open', () => {
      live.backoffMs = BACKOFF_INITIAL_MS;
      live.socketOpen = true;
      setLink('browser-relay', 'connected');
      socket.send(JSON.stringify({ type: 'hello', v: 1 }));
      socket.send(JSON.stringify({ type: 'watch' }));
    });
    socket.addEventListener('message', (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch (_) { return; }
      if (msg && typeof msg === 'object') handle(msg);
    });
    socket.addEventListener('close', () => {
      if (live.socket !== socket) return;
      live.socket = null;
      live.socketOpen = false;
      live.statsSentAt = 0;
      setLink('browser-relay', 'disconnected');
      setLink('relay-renderer', 'disconnected', 'unknown');
      live.renderer = 'disconnected';
      updateStale();
      const delay = live.backoffMs * (0.5 + Math.random() / 2);
      live.backoffMs = Math.min(live.backoffMs * 2, BACKOFF_MAX_MS);
      setTimeout(connect, delay);
    });
  }

  function handle(msg) {
    if (members.handle(msg)) return;
    switch (msg.type) {
      case 'welcome':
      case 'link':
        setLink('relay-renderer', msg.renderer);
        live.renderer = msg.renderer;
        updateStale();
        break;
      case 'presence':
        $('online').textContent = Number(msg.online).toLocaleString();
        if (typeof msg.dashboards === 'number') setDashboards(msg.dashboards);
        break;
      case 'user_connected':
      case 'user_disconnected':
      case 'visitor_update':
        if (typeof msg.dashboards === 'number') setDashboards(msg.dashboards);
        break;
      case 'analytics':
        onAnalytics(msg.summary, msg.sessions);
        break;
      case 'detailed_stats':
        onDetailedStats(msg);
        break;
      case 'session_activity':
        onActivity(msg.events || [], msg.dropped || 0);
        break;
      case 'alert':
        onAlert(msg);
        break;
      case 'error':
        if (msg.code === 'busy' || String(msg.message || '').startsWith('request_detailed_stats')
          || String(msg.message || '').startsWith('filters')) {
          live.statsSentAt = 0;
        }
        break;
      default:
        break;
    }
  }

  /**
   * Live means: this page's socket is open and the relay reaches the renderer. Otherwise
   * every live number, the chart, the feed and the sessions are greyed (`data-stale` on
   * their container says why) and the spike banner is hidden, since none of them moves.
   */
  function updateStale() {
    const container = $('live');
    const reason = !live.socketOpen ? 'relay' : live.renderer !== 'connected' ? 'renderer' : null;
    if (reason) {
      container.dataset.stale = reason;
      $('stale-note').textContent = reason === 'relay'
        ? 'Not connected to the relay: these numbers are from before the disconnect and stand still until it is back.'
        : 'The relay cannot reach the renderer: these numbers stand still until it is back.';
      $('spike-alert').hidden = true;
    } else {
      delete container.dataset.stale;
      $('stale-note').textContent = '';
    }
  }

  function setDashboards(count) {
    $('dashboards').textContent = Number(count).toLocaleString();
  }

  /** Whether a page or country filter is on (the relay answers those; device is ours). */
  function serverFiltered() {
    return Boolean($('f-page').value || $('f-country').value);
  }

  function onAnalytics(summary, sessions) {
    if (!summary) return;
    live.summary = summary;
    live.sessions = Array.isArray(sessions) ? sessions : [];
    live.sessionsById = new Map(live.sessions.map((session) => [session.sessionId, session]));
    for (const session of live.sessions) {
      noteSession(session.sessionId, false);
      if (session.country) offerCountry(session.country);
      if (session.device) offerDevice(session.device);
      for (const page of session.journey || []) offerFilterPage(page);
    }
    for (const page of summary.top_pages || []) { addPage(page.name); offerFilterPage(page.name); }
    for (const page of Object.keys(summary.pagesVisited || {})) offerFilterPage(page);
    for (const country of summary.top_countries || []) offerCountry(country.name);
    for (const country of Object.keys(summary.countries || {})) offerCountry(country);
    if (!live.feedSeeded) {
      // Once: later events come one by one in session_activity.
      live.feedSeeded = true;
      seedFeed(summary.recentEvents || []);
    }
    if (serverFiltered()) requestStats();
    else showNumbers(summary);
    showSessions();
    // New visitors today: the range's totals (which reach now, unless custom) moved too.
    if (summary.totalToday !== live.totalToday) {
      const first = live.totalToday === undefined;
      live.totalToday = summary.totalToday;
      if (!first && $('f-range').value !== 'custom') scheduleHistory();
    }
  }

  /** Reads the history again soon, at most once per HISTORY_MIN_GAP_MS. */
  let historyTimer = null;
  function scheduleHistory() {
    if (historyTimer !== null) return;
    const wait = Math.max(0, HISTORY_MIN_GAP_MS - (Date.now() - live.historyAt));
    historyTimer = setTimeout(() => { historyTimer = null; loadHistory(); }, wait);
  }

  /** Asks the relay for this dashboard's filtered numbers (one request at a time). */
  function requestStats() {
    if (live.statsSentAt && Date.now() - live.statsSentAt < STATS_PATIENCE_MS) return;
    const filters = { page: $('f-page').value || null, country: $('f-country').value || null };
    if (send({ type: 'request_detailed_stats', filters })) live.statsSentAt = Date.now();
  }

  function onDetailedStats(msg) {
    live.statsSentAt = 0;
    live.statsAnswers += 1;
    const container = $('live');
    container.dataset.statsAnswers = String(live.statsAnswers);
    container.dataset.filters = JSON.stringify(msg.filters || {});
    // An answer to a filter that was changed since is dropped; the next push asks again.
    const wanted = { page: $('f-page').value, country: $('f-country').value };
    const got = msg.filters || {};
    if ((got.page || '') !== wanted.page || (got.country || '') !== wanted.country) return;
    live.detailed = msg.summary;
    showNumbers(msg.summary);
  }

  /** The cards, chart and spike check for a summary (the whole site's or the filter's). */
  function showNumbers(summary) {
    $('active-users').textContent = Number(summary.active_users).toLocaleString();
    $('events-minute').textContent = Number(summary.events_last_minute).toLocaleString();
    $('events-5').textContent = Number(summary.events_last_5_minutes).toLocaleString();
    $('visitors-today').textContent = Number(summary.totalToday || 0).toLocaleString();
    const perSecond = Array.isArray(summary.per_second) ? summary.per_second : [];
    if (Array.isArray(summary.per_ten_seconds) && summary.per_ten_seconds.length === CHART_BARS) {
      takeSeries(summary.per_ten_seconds);
    } else {
      recordSeries(perSecond);
    }
    drawChart();
    if (!$('live').dataset.stale) checkSpike(perSecond);
  }

  /**
   * For a server without `per_ten_seconds`: folds the summary's 300 per-second counts into
   * 10-second buckets by wall time, so the chart covers 10 minutes: the last 5 from this
   * push, the 5 before from earlier pushes this page received (before the page opened
   * there is nothing, drawn as such).
   */
  function recordSeries(perSecond) {
    if (perSecond.length === 0) return;
    const nowSecond = Math.floor(Date.now() / 1000);
    const firstSecond = nowSecond - perSecond.length + 1;
    const fresh = new Map();
    perSecond.forEach((count, idx) => {
      const bucket = Math.floor((firstSecond + idx) / CHART_BAR_SECONDS);
      fresh.set(bucket, (fresh.get(bucket) || 0) + count);
    });
    const partial = Math.floor(firstSecond / CHART_BAR_SECONDS);
    for (const [bucket, count] of fresh) {
      // The oldest bucket is only partly inside the window: what was seen of it before stays.
      live.buckets.set(bucket, bucket === partial ? Math.max(count, live.buckets.get(bucket) || 0) : count);
    }
    if (live.firstBucket === null) live.firstBucket = partial;
    const oldest = Math.floor(nowSecond / CHART_BAR_SECONDS) - CHART_BARS;
    for (const bucket of live.buckets.keys()) if (bucket <= oldest) live.buckets.delete(bucket);
  }

  /** The server's own 10 minutes in 10-second buckets, the last one the current bucket. */
  function takeSeries(perTenSeconds) {
    const nowBucket = Math.floor(Date.now() / 1000 / CHART_BAR_SECONDS);
    live.buckets.clear();
    perTenSeconds.forEach((count, idx) => live.buckets.set(nowBucket - CHART_BARS + 1 + idx, Number(count) || 0));
    live.firstBucket = nowBucket - CHART_BARS + 1;
  }

  /** Forgets the chart's memory (a new filter counts other events). */
  function resetSeries() {
    live.buckets.clear();
    live.firstBucket = null;
  }

  function drawChart() {
    const canvas = $('rate');
    const context = canvas.getContext('2d');
    const { width, height } = canvas;
    context.clearRect(0, 0, width, height);
    const nowBucket = Math.floor(Date.now() / 1000 / CHART_BAR_SECONDS);
    const bars = [];
    for (let idx = 0; idx < CHART_BARS; idx += 1) {
      const bucket = nowBucket - CHART_BARS + 1 + idx;
      bars.push({ bucket, count: live.buckets.get(bucket) || 0, seen: live.firstBucket !== null && bucket >= live.firstBucket });
    }
    const max = Math.max(1, ...bars.map((bar) => bar.count));
    const step = width / CHART_BARS;
    const top = 18;
    const bottom = height - 16;
    bars.forEach((bar, idx) => {
      if (!bar.seen) {
        context.fillStyle = '#eef0f3';
        context.fillRect(idx * step, top, Math.max(1, step - 1), bottom - top);
        return;
      }
      const barHeight = (bar.count / max) * (bottom - top);
      context.fillStyle = '#3b82f6';
      context.fillRect(idx * step, bottom - barHeight, Math.max(1, step - 1), barHeight);
    });
    context.fillStyle = '#5b6475';
    context.font = '12px system-ui, sans-serif';
    context.textBaseline = 'top';
    context.fillText(`peak ${max.toLocaleString()} per 10 s`, 6, 2);
    context.textBaseline = 'bottom';
    context.fillText('−10 min', 2, height);
    const midLabel = '−5 min';
    context.fillText(midLabel, width / 2 - context.measureText(midLabel).width / 2, height);
    context.fillText('now', width - context.measureText('now').width - 2, height);
    canvas.dataset.bars = bars.map((bar) => (bar.seen ? bar.count : '')).join(',');
  }

  /** The last 10 seconds against the 290 before them. */
  function checkSpike(perSecond) {
    const alert = $('spike-alert');
    if (perSecond.length <= 10) { alert.hidden = true; return; }
    const factor = Number($('spike-factor').value) || 3;
    const recent = perSecond.slice(-10);
    const before = perSecond.slice(0, -10);
    const recentRate = recent.reduce((a, b) => a + b, 0) / recent.length;
    const baseline = before.reduce((a, b) => a + b, 0) / Math.max(1, before.length);
    const spiking = recentRate >= 1 && recentRate > factor * Math.max(baseline, 0.1);
    alert.hidden = !spiking;
    if (spiking) {
      alert.textContent = `Spike: ${recentRate.toFixed(1)} events/s in the last 10 s, ${factor}× above the recent ${baseline.toFixed(2)}/s.`;
    }
  }

  /** Whether a session (by its known details) passes the page, country and device filters. */
  function sessionMatches(session) {
    const page = $('f-page').value;
    const country = $('f-country').value;
    const device = $('f-device').value;
    if (country && session.country !== country) return false;
    if (device && session.device !== device) return false;
    if (page && !(session.journey || []).includes(page)) return false;
    return true;
  }

  /**
   * The sessions table, at most SESSION_ROWS rows. Rows are kept per session and only
   * their changed cells rewritten, so a row being hovered, clicked or copied from stays
   * put while the numbers move.
   */
  const sessionRows = new Map();
  function showSessions() {
    const matching = live.sessions.filter(sessionMatches);
    const shown = matching.slice(0, SESSION_ROWS);
    const ids = shown.map((session) => session.sessionId);
    for (const session of shown) {
      let row = sessionRows.get(session.sessionId);
      if (!row) {
        row = document.createElement('tr');
        row.tabIndex = 0;
        row.className = 'session-row';
        row.dataset.session = session.sessionId;
        row.title = 'Open this session';
        for (let idx = 0; idx < 7; idx += 1) row.append(document.createElement('td'));
        const id = document.createElement('span');
        id.className = 'sid';
        row.cells[0].append(id);
        sessionRows.set(session.sessionId, row);
      }
      const id = row.cells[0].firstChild;
      setText(id, session.sessionId);
      id.title = session.sessionId;
      setText(row.cells[1], session.country || '–');
      setText(row.cells[2], session.device || '–');
      setText(row.cells[3], compactJourney(session.journey || []));
      row.cells[3].title = (session.journey || []).join(' → ');
      setText(row.cells[4], Number(session.events).toLocaleString());
      setText(row.cells[5], duration((session.last_seen - session.first_seen) / 1000));
      setText(row.cells[6], new Date(session.last_seen).toLocaleTimeString());
    }
    for (const id of sessionRows.keys()) if (!ids.includes(id)) sessionRows.delete(id);
    const body = $('sessions');
    const sameOrder = ids.length === live.sessionRowIds.length && ids.every((id, idx) => id === live.sessionRowIds[idx]);
    if (!sameOrder) {
      body.replaceChildren(...ids.map((id) => sessionRows.get(id)));
      live.sessionRowIds = ids;
    }
    const hidden = matching.length - shown.length;
    $('sessions-note').textContent = `${matching.length.toLocaleString()} active ${matching.length === 1 ? 'session' : 'sessions'}`
      + (hidden > 0 ? `; the ${shown.length} most recent are listed` : '')
      + (matching.length !== live.sessions.length ? ` (of ${live.sessions.length.toLocaleString()}, filtered)` : '');
  }

  function setText(element, text) {
    if (element.textContent !== text) element.textContent = text;
  }

  /** A journey in one short line: first page, how many between, last page. */
  function compactJourney(journey) {
    if (journey.length <= 3) return journey.join(' → ');
    return `${journey[0]} → … ${journey.length - 2} more … → ${journey[journey.length - 1]}`;
  }

  function duration(seconds) {
    const total = Math.max(0, Math.round(seconds));
    if (total < 60) return `${total} s`;
    const minutes = Math.floor(total / 60);
    if (minutes < 60) return `${minutes} min ${total % 60} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  /** The live feed, newest first, FEED_ROWS at most. */
  function onActivity(events, dropped) {
    for (const event of events) {
      const known = live.sessionsById.get(event.sessionId);
      const isNew = noteSession(event.sessionId, true);
      if (isNew && soundOn()) beep();
      if (!feedMatches(event, known)) continue;
      addFeedRow(event.type, event.page, event.sessionId, new Date(), known && known.country);
    }
    if (dropped > 0) {
      const feed = $('feed');
      feed.dataset.dropped = String(Number(feed.dataset.dropped || 0) + dropped);
      $('feed-note').textContent = `${Number(feed.dataset.dropped).toLocaleString()} events were too many to list one by one.`;
    }
  }

  /** Whether a feed event passes the filters (country and device as its session's). */
  function feedMatches(event, session) {
    const page = $('f-page').value;
    const country = $('f-country').value;
    const device = $('f-device').value;
    if (page && event.page !== page) return false;
    if (country && (event.country || (session && session.country)) !== country) return false;
    if (device && (!session || session.device !== device)) return false;
    return true;
  }

  function seedFeed(recentEvents) {
    // Newest first already: appended in order, each below the one before.
    for (const event of [...recentEvents].reverse()) {
      if (!feedMatches(event, live.sessionsById.get(event.sessionId))) continue;
      addFeedRow(event.type, event.page, event.sessionId, new Date(event.timestamp), event.country);
    }
  }

  function addFeedRow(type, page, sessionId, at, country) {
    const feed = $('feed');
    const item = document.createElement('li');
    item.dataset.session = sessionId;
    const time = document.createElement('time');
    time.textContent = at.toLocaleTimeString();
    const what = document.createElement('span');
    what.className = 'what';
    what.textContent = `${type} ${page}`;
    const who = document.createElement('span');
    who.className = 'sid';
    who.textContent = sessionId;
    who.title = sessionId;
    item.append(time, what, who);
    if (country) {
      const where = document.createElement('span');
      where.className = 'country';
      where.textContent = country;
      item.append(where);
    }
    feed.prepend(item);
    while (feed.childElementCount > FEED_ROWS) feed.lastElementChild.remove();
    feed.dataset.count = String(feed.childElementCount);
  }

  /** Remembers a session id; true when it was not known (a new visitor). */
  function noteSession(sessionId, announce) {
    if (live.seenSessions.has(sessionId)) return false;
    if (live.seenSessions.size >= MAX_SEEN_SESSIONS) live.seenSessions.clear();
    live.seenSessions.add(sessionId);
    return announce;
  }

  /** The relay's alerts (a spike began), newest first; the last few only. */
  function onAlert(alert) {
    const item = document.createElement('li');
    item.dataset.kind = String(alert.kind || '');
    item.textContent = `${new Date().toLocaleTimeString()} — ${alert.message || alert.kind}`;
    const list = $('alerts');
    list.prepend(item);
    while (list.children.length > MAX_ALERTS) list.lastElementChild.remove();
    if (soundOn()) beep();
  }

  function soundOn() {
    return $('sound').checked;
  }

  let audio = null;
  /** A short, quiet beep (WebAudio); the context is made on the click that turns sound on. */
  function beep() {
    try {
      if (!audio) audio = new AudioContext();
      const oscillator = audio.createOscillator();
      const gain = audio.createGain();
      oscillator.frequency.value = 880;
      gain.gain.setValueAtTime(0.08, audio.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.0001, audio.currentTime + 0.15);
      oscillator.connect(gain).connect(audio.destination);
      oscillator.start();
      oscillator.stop(audio.currentTime + 0.15);
    } catch (_) {
      // No audio here (a policy or no device): the feed still shows the visitor.
    }
  }

  function offerOption(select, known, value, label) {
    if (!value || known.has(value) || known.size >= MAX_OPTIONS) return;
    known.add(value);
    const option = document.createElement('option');
    option.value = value;
    option.textContent = label || value;
    select.append(option);
  }
  function offerCountry(country) { offerOption($('f-country'), live.knownCountries, country); }
  function offerFilterPage(page) { offerOption($('f-page'), live.knownFilterPages, page); }
  function offerDevice(device) { offerOption($('f-device'), live.knownDevices, device); }

  /** A filter changed: the relay is asked for the filtered numbers, history read again. */
  function onFilterChange(which) {
    send({ type: 'track_dashboard_action', action: 'filter_change', data: { filter: which } });
    live.detailed = null;
    // The device filter is applied on this page to the lists alone; the numbers stay.
    if (which !== 'device') resetSeries();
    if (serverFiltered()) {
      live.statsSentAt = 0;
      requestStats();
    } else {
      delete $('live').dataset.filters;
      if (live.summary) showNumbers(live.summary);
    }
    live.sessionRowIds = [];
    showSessions();
    $('feed').replaceChildren();
    $('feed').dataset.count = '0';
    if (live.summary) seedFeed(live.summary.recentEvents || []);
    loadHistory();
  }

  /** The chosen range as query parameters, or an error sentence. */
  function rangeParams() {
    const params = new URLSearchParams();
    const range = $('f-range').value;
    if (range === 'today') {
      const midnight = new Date();
      midnight.setHours(0, 0, 0, 0);
      params.set('from', String(midnight.getTime()));
    } else if (range === 'custom') {
      const from = new Date($('f-from').value).getTime();
      const to = new Date($('f-to').value).getTime();
      if (!Number.isFinite(from) || !Number.isFinite(to)) return 'Choose both ends of the custom range.';
      if (to < from) return 'The range ends before it starts.';
      params.set('from', String(from));
      params.set('to', String(to));
    } else {
      params.set('range', range);
    }
    if ($('f-page').value) params.set('page', $('f-page').value);
    if ($('f-country').value) params.set('country', $('f-country').value);
    return params;
  }

  const RANGE_NAMES = { today: 'today', '24h': 'the last 24 hours', '7d': 'the last 7 days', '30d': 'the last 30 days', custom: 'the chosen range' };
  let historyGeneration = 0;
  /** Totals and top lists of the chosen range, from the store (over HTTP). */
  async function loadHistory() {
    $('custom-range').hidden = $('f-range').value !== 'custom';
    const params = rangeParams();
    const section = $('history');
    if (typeof params === 'string') {
      section.dataset.state = 'invalid';
      $('history-note').textContent = params;
      return;
    }
    historyGeneration += 1;
    const generation = historyGeneration;
    live.historyAt = Date.now();
    section.dataset.state = 'loading';
    try {
      const response = await fetch(`/api/analytics/summary?${params}`);
      const body = await response.json();
      if (generation !== historyGeneration) return;
      if (!response.ok) throw new Error(body && body.error ? body.error : `HTTP ${response.status}`);
      const totals = body.totals || { events: 0, pageviews: 0, clicks: 0, sessions: 0 };
      $('h-events').textContent = Number(totals.events).toLocaleString();
      $('h-pageviews').textContent = Number(totals.pageviews).toLocaleString();
      $('h-clicks').textContent = Number(totals.clicks).toLocaleString();
      $('h-sessions').textContent = Number(totals.sessions).toLocaleString();
      fillList($('top-pages'), body.top_pages || []);
      fillList($('top-countries'), body.top_countries || []);
      for (const page of body.top_pages || []) { addPage(page.name); offerFilterPage(page.name); }
      for (const country of body.top_countries || []) offerCountry(country.name);
      section.dataset.state = 'shown';
      section.dataset.range = params.toString();
      $('history-note').textContent = `From the stored history: ${RANGE_NAMES[$('f-range').value]}.`;
    } catch (err) {
      if (generation !== historyGeneration) return;
      section.dataset.state = 'failed';
      $('history-note').textContent = `The history could not be read: ${err.message || err}`;
    }
  }

  function fillList(list, counts) {
    list.replaceChildren(...counts.map((count) => {
      const item = document.createElement('li');
      item.textContent = `${count.name} — ${count.events.toLocaleString()}`;
      return item;
    }));
  }

  function addPage(page) {
    if (knownPages.has(page) || knownPages.size >= MAX_OPTIONS) return;
    knownPages.add(page);
    const option = document.createElement('option');
    option.value = page;
    option.textContent = page;
    $('hm-page').append(option);
  }

  /**
   * The session dialog: everything known of one visit, from the live sessions, and its
   * clicks from the store (GET /api/analytics/session) as a small heatmap per page.
   */
  let dialogGeneration = 0;
  async function openSession(sessionId) {
    const session = live.sessionsById.get(sessionId);
    if (!session) return;
    send({ type: 'track_dashboard_action', action: 'view_session' });
    dialogGeneration += 1;
    const generation = dialogGeneration;
    const dialog = $('session-dialog');
    dialog.dataset.session = sessionId;
    $('sd-id').textContent = sessionId;
    const details = [
      ['Device', session.device || 'unknown'],
      ['Country', session.country || 'unknown'],
      ['Referrer', session.referrer || 'direct or unknown'],
      ['Events', Number(session.events).toLocaleString()],
      ['Started', new Date(session.first_seen).toLocaleString()],
      ['Last seen', new Date(session.last_seen).toLocaleString()],
      ['Duration', duration((session.last_seen - session.first_seen) / 1000)],
    ];
    $('sd-details').replaceChildren(...details.flatMap(([name, value]) => {
      const term = document.createElement('dt');
      term.textContent = name;
      const description = document.createElement('dd');
      description.textContent = value;
      description.dataset.field = name.toLowerCase().replace(' ', '-');
      return [term, description];
    }));
    const steps = session.steps && session.steps.length ? session.steps : (session.journey || []).map((page) => ({ page, at: null }));
    $('sd-journey').replaceChildren(...steps.map((step, idx) => {
      const item = document.createElement('li');
      const next = steps[idx + 1];
      const end = next ? next.at : session.last_seen;
      const time = document.createElement('time');
      time.textContent = step.at === null ? '' : new Date(step.at).toLocaleTimeString();
      const page = document.createElement('span');
      page.className = 'page';
      page.textContent = step.page;
      const stay = document.createElement('span');
      stay.className = 'stay';
      stay.textContent = step.at === null ? '' : `${duration((end - step.at) / 1000)}${next ? '' : ' so far'}`;
      item.append(time, page, stay);
      return item;
    }));
    const clicks = $('sd-clicks');
    clicks.replaceChildren();
    clicks.dataset.state = 'loading';
    delete clicks.dataset.clicks;
    $('sd-clicks-note').textContent = 'Loading the clicks…';
    if (!dialog.open) dialog.showModal();
    try {
      const params = new URLSearchParams({ id: sessionId, from: String(session.first_seen), to: String(session.last_seen) });
      const response = await fetch(`/api/analytics/session?${params}`);
      const body = await response.json();
      if (generation !== dialogGeneration) return;
      if (!response.ok) throw new Error(body && body.error ? body.error : `HTTP ${response.status}`);
      drawSessionClicks(body.clicks || [], Boolean(body.truncated));
    } catch (err) {
      if (generation !== dialogGeneration) return;
      clicks.dataset.state = 'failed';
      $('sd-clicks-note').textContent = `The clicks could not be read: ${err.message || err}`;
    }
  }

  /** One small canvas per page (the pages with most clicks first), each click a soft dot. */
  function drawSessionClicks(clicks, truncated) {
    const container = $('sd-clicks');
    const byPage = new Map();
    for (const click of clicks) {
      if (!(click.dw > 0 && click.dh > 0)) continue;
      if (!byPage.has(click.page)) byPage.set(click.page, []);
      byPage.get(click.page).push(click);
    }
    const pages = [...byPage.entries()].sort((a, b) => b[1].length - a[1].length).slice(0, DIALOG_PAGES);
    const WIDTH = 180;
    let drawn = 0;
    const figures = pages.map(([page, pageClicks]) => {
      const figure = document.createElement('figure');
      const canvas = document.createElement('canvas');
      const ratio = Math.min(2.5, Math.max(0.5, pageClicks[0].dh / pageClicks[0].dw));
      canvas.width = WIDTH;
      canvas.height = Math.round(WIDTH * ratio);
      canvas.dataset.page = page;
      const context = canvas.getContext('2d');
      context.fillStyle = '#f3f4f6';
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.globalCompositeOperation = 'multiply';
      for (const click of pageClicks) {
        const x = (click.x / click.dw) * canvas.width;
        const y = (click.y / click.dh) * canvas.height;
        const glow = context.createRadialGradient(x, y, 0, x, y, 12);
        glow.addColorStop(0, 'rgba(220, 38, 38, 0.9)');
        glow.addColorStop(1, 'rgba(220, 38, 38, 0)');
        context.fillStyle = glow;
        context.fillRect(x - 12, y - 12, 24, 24);
        drawn += 1;
      }
      const caption = document.createElement('figcaption');
      caption.textContent = `${page} · ${pageClicks.length} ${pageClicks.length === 1 ? 'click' : 'clicks'}`;
      figure.append(canvas, caption);
      return figure;
    });
    container.replaceChildren(...figures);
    container.dataset.state = 'shown';
    container.dataset.clicks = String(drawn);
    const more = byPage.size - pages.length;
    $('sd-clicks-note').textContent = clicks.length === 0
      ? 'No clicks in this session.'
      : `${drawn} ${drawn === 1 ? 'click' : 'clicks'} at their places on the page${more > 0 ? ` (the ${pages.length} pages with most clicks; ${more} more)` : ''}${truncated ? '; the session\'s span held more events than one read returns, so later clicks may be missing' : ''}.`;
  }

  $('sessions').addEventListener('click', (event) => {
    const row = event.target.closest('tr[data-session]');
    // Selecting text (to copy an id) is not a click on the row.
    if (row && String(window.getSelection()).length === 0) openSession(row.dataset.session);
  });
  $('sessions').addEventListener('keydown', (event) => {
    const row = event.target.closest('tr[data-session]');
    if (row && (event.key === 'Enter' || event.key === ' ')) {
      event.preventDefault();
      openSession(row.dataset.session);
    }
  });
  $('sd-close').addEventListener('click', () => { $('session-dialog').close(); });

  for (const id of ['f-page', 'f-country', 'f-device']) {
    $(id).addEventListener('change', () => { onFilterChange(id.slice(2)); });
  }
  for (const id of ['f-range', 'f-from', 'f-to']) {
    $(id).addEventListener('change', () => {
      send({ type: 'track_dashboard_action', action: 'range_change', data: { range: $('f-range').value } });
      loadHistory();
    });
  }
  setInterval(() => { loadHistory(); }, HISTORY_REFRESH_MS);

  // Sound is opt-in and remembered in this browser.
  try { $('sound').checked = localStorage.getItem(SOUND_KEY) === 'on'; } catch (_) { $('sound').checked = false; }
  $('sound').addEventListener('change', () => {
    const on = $('sound').checked;
    try { localStorage.setItem(SOUND_KEY, on ? 'on' : 'off'); } catch (_) { /* private mode: not kept */ }
    send({ type: 'track_dashboard_action', action: 'toggle_sound', data: { on } });
    if (on && !audio) {
      try { audio = new AudioContext(); } catch (_) { audio = null; }
    }
  });

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
      if (Array.isArray(sessions) && summary.per_second && !live.summary) onAnalytics(summary, sessions.slice(0, SESSION_ROWS));
    } catch (_) {
      // The push will fill everything in once the renderer answers.
    }
  }

  updateStale();
  firstLook();
  loadHistory();
  connect();
})();
