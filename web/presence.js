// Who is here: the members list the relay keeps (docs/protocol.md, "Members"), shared by
// the recorder page and the dashboard. It shows the count and the most recent names,
// announces joins and leaves briefly as they happen, and lets the person choose a name,
// kept in this browser and sent again after every reconnect.
'use strict';

(() => {
  /** Names listed after the count; the rest are only counted (a large room stays one line). */
  const NAMES_SHOWN = 5;
  /** Members remembered by id, newest first: enough for the names shown and renames. */
  const MEMBERS_KEPT = 50;
  /** How long a join or leave stays announced. */
  const NOTICE_MS = 4000;
  /** Where the chosen name is kept, for every page of this site. */
  const NAME_KEY = 'heatmap.name';
  /** The relay's bound on a name (trimmed), checked here too so the field says why. */
  const MAX_NAME_CHARS = 32;

  function storedName() {
    try { return localStorage.getItem(NAME_KEY) || ''; } catch (_) { return ''; }
  }

  /**
   * Builds the widget inside `container` and returns its message handler. `send(msg)`
   * sends over the page's socket (false while it is closed). The container gets
   * `data-count` and the list `data-names`, which tests read.
   */
  function create(container, send) {
    const members = [];
    let you = null;
    let noticeTimer = null;

    container.classList.add('members');
    container.innerHTML = '';
    const summary = document.createElement('span');
    summary.className = 'members-summary';
    const count = document.createElement('span');
    count.className = 'members-count';
    count.textContent = 'Online: –';
    const names = document.createElement('span');
    names.className = 'members-names';
    summary.append(count, names);
    const notice = document.createElement('span');
    notice.className = 'members-notice';
    notice.setAttribute('role', 'status');
    notice.setAttribute('aria-live', 'polite');
    const label = document.createElement('label');
    label.className = 'members-name';
    label.textContent = 'Your name ';
    const input = document.createElement('input');
    input.name = 'member-name';
    input.maxLength = MAX_NAME_CHARS;
    input.placeholder = 'User-…';
    input.value = storedName();
    input.setAttribute('aria-label', 'Your name, shown to the others here');
    label.append(input);
    container.append(summary, notice, label);

    input.addEventListener('change', () => {
      const name = input.value.trim();
      if (!name) {
        try { localStorage.removeItem(NAME_KEY); } catch (_) { /* private mode: not kept */ }
        return;
      }
      try { localStorage.setItem(NAME_KEY, name); } catch (_) { /* private mode: not kept */ }
      send({ type: 'set_name', name });
    });

    function remember(member) {
      const idx = members.findIndex((known) => known.id === member.id);
      if (idx >= 0) members.splice(idx, 1);
      members.unshift({ id: member.id, name: String(member.name) });
      members.length = Math.min(members.length, MEMBERS_KEPT);
    }

    function forget(member) {
      const idx = members.findIndex((known) => known.id === member.id);
      if (idx >= 0) members.splice(idx, 1);
    }

    function render(total) {
      container.dataset.count = String(total);
      count.textContent = `Online: ${total.toLocaleString()}`;
      const shown = members.slice(0, NAMES_SHOWN).map((member) => (you && member.id === you.id ? `${member.name} (you)` : member.name));
      const more = total - shown.length;
      names.textContent = shown.length ? ` — ${shown.join(', ')}${more > 0 ? `, +${more.toLocaleString()} more` : ''}` : '';
      names.dataset.names = members.slice(0, NAMES_SHOWN).map((member) => member.name).join('\n');
    }

    function announce(text, kind) {
      notice.textContent = text;
      notice.dataset.kind = kind;
      clearTimeout(noticeTimer);
      noticeTimer = setTimeout(() => { notice.textContent = ''; delete notice.dataset.kind; }, NOTICE_MS);
    }

    /** Handles a members message and says whether it was one. */
    function handle(msg) {
      switch (msg.type) {
        case 'members': {
          you = msg.you;
          members.length = 0;
          for (const member of [...(msg.recent || [])].reverse()) remember(member);
          render(msg.count);
          // A reconnect is a new member with a generated name: the chosen one again.
          const name = storedName();
          if (name && you && you.name !== name) send({ type: 'set_name', name });
          return true;
        }
        case 'user_join': {
          const known = members.find((member) => member.id === msg.member.id);
          if (you && msg.member.id === you.id) you = msg.member;
          else if (known && known.name !== msg.member.name) announce(`${known.name} is now ${msg.member.name}`, 'rename');
          else if (!known) announce(`${msg.member.name} joined`, 'join');
          remember(msg.member);
          render(msg.count);
          return true;
        }
        case 'user_leave':
          forget(msg.member);
          announce(`${msg.member.name} left`, 'leave');
          render(msg.count);
          return true;
        case 'presence':
          // In a room larger than the relay announces one by one, the count still moves.
          if (typeof msg.online === 'number' && msg.online !== Number(container.dataset.count)) render(msg.online);
          return false;
        case 'error':
          if (typeof msg.message === 'string' && msg.message.startsWith('name')) {
            announce(`Name refused: ${msg.message}`, 'error');
            return true;
          }
          return false;
        default:
          return false;
      }
    }

    return { handle };
  }

  window.heatmapPresence = { create };
})();
