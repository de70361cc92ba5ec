// llmproxy console. Plain JavaScript, no dependencies, nothing loaded from elsewhere.
// Every value from the gateway is put on the page with textContent / setAttribute (never as HTML),
// so names, aliases and metadata always show as text.
'use strict';
(() => {
  const S = { csrf: '', signInRequired: false, timer: null, features: {}, configured: [] };
  const $ = (sel, root = document) => root.querySelector(sel);

  // ---- DOM helpers ------------------------------------------------------------------------------
  function add(el, kids) {
    for (const k of kids) {
      if (k === null || k === undefined || k === false) continue;
      if (Array.isArray(k)) add(el, k);
      else if (k instanceof Node) el.appendChild(k);
      else el.appendChild(document.createTextNode(String(k)));
    }
    return el;
  }
  const put = (el, ...kids) => add(el, kids);
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k === 'value') el.value = v;
      else if (k === 'checked') el.checked = !!v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    return add(el, kids);
  }
  const NS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
    return add(el, kids);
  }
  function toast(msg) {
    const t = $('#toast');
    t.textContent = msg;
    clearTimeout(toast.t);
    toast.t = setTimeout(() => { t.textContent = ''; }, 4000);
  }

  // ---- formatting --------------------------------------------------------------------------------
  const isNum = (v) => typeof v === 'number' && isFinite(v);
  function num(v, d = 1) {
    if (!isNum(v)) return '—';
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(d) + 'G';
    if (a >= 1e6) return (v / 1e6).toFixed(d) + 'M';
    if (a >= 1e4) return (v / 1e3).toFixed(d) + 'k';
    if (Number.isInteger(v)) return String(v);
    return v.toFixed(a < 1 ? 3 : d);
  }
  const int = (v) => (isNum(v) ? Math.round(v).toLocaleString('en-US') : '—');
  function usd(v) {
    if (!isNum(v)) return '—';
    if (v === 0) return '$0';
    return '$' + (Math.abs(v) < 0.01 ? v.toFixed(6) : Math.abs(v) < 100 ? v.toFixed(4) : v.toFixed(2));
  }
  function ms(v) {
    if (!isNum(v)) return '—';
    if (v === 0) return '0';
    if (v >= 10000) return (v / 1000).toFixed(1) + ' s';
    if (v >= 1000) return (v / 1000).toFixed(2) + ' s';
    return (v < 10 ? v.toFixed(2) : v.toFixed(0)) + ' ms';
  }
  const pct = (v) => (isNum(v) ? (v * 100).toFixed(v < 0.1 && v > 0 ? 2 : 1) + '%' : '—');
  const pad = (n) => String(n).padStart(2, '0');
  function clock(msv) { const d = new Date(msv); return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()); }
  function ymd(d) { return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()); }
  function when(v) {
    if (!v) return '—';
    const d = new Date(v);
    return isNaN(d) ? String(v) : ymd(d) + ' ' + pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ' UTC';
  }
  const text = (v) => (v === null || v === undefined || v === '' ? '—' : typeof v === 'object' ? JSON.stringify(v) : String(v));

  // ---- API ---------------------------------------------------------------------------------------
  async function call(method, path, body) {
    const opt = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store' };
    if (method === 'POST') {
      opt.headers['Content-Type'] = 'application/json';
      opt.headers['X-CSRF-Token'] = S.csrf;
      opt.body = JSON.stringify(body || {});
    }
    let r;
    try { r = await fetch('/ui/api/' + path, opt); } catch (e) {
      return { status: 0, ok: false, data: { error: { message: 'the gateway did not answer' } } };
    }
    let data = null;
    try { data = await r.json(); } catch (_) { /* not JSON */ }
    if (r.status === 401 && data && data.error && data.error.code === 'sign_in_required') signIn();
    return { status: r.status, ok: r.ok, data };
  }
  const manage = (method, path, body) => call(method, 'manage/' + path, body);
  const errOf = (r) => (r.data && r.data.error && r.data.error.message) || ('HTTP ' + r.status);
  const unavailable = (r) => r.status === 404 && r.data && r.data.error && ['not_found', 'not_available'].includes(r.data.error.code);

  // ---- shared widgets ----------------------------------------------------------------------------
  function table(label, heads, rows, emptyText) {
    const names = heads.map((c) => c.t || c);
    const thead = h('thead', null, h('tr', null, heads.map((c, i) => h('th', { scope: 'col', class: c.num ? 'num' : null }, names[i]))));
    const body = h('tbody');
    if (!rows.length) body.appendChild(h('tr', { class: 'empty' }, h('td', { colspan: heads.length }, emptyText || 'Nothing yet.')));
    for (const r of rows) {
      // On a narrow screen each row becomes a card whose cells carry their column's name.
      Array.from(r.children).forEach((td, i) => td.setAttribute('data-label', names[i] || ''));
      body.appendChild(r);
    }
    return h('div', { class: 'table-wrap' }, h('table', { 'aria-label': label, class: 'stack' }, thead, body));
  }
  function badge(kind, label) { return h('span', { class: 'badge ' + kind }, label); }
  function bar(used, cap, invert, share) {
    // used of cap: green → amber → red as it fills (invert: as it empties; share: one colour).
    if (!isNum(cap) || cap <= 0) return null;
    const f = Math.max(0, Math.min(1, (used || 0) / cap));
    const level = invert ? 1 - f : f;
    const fill = h('span');
    fill.style.width = (f * 100).toFixed(1) + '%';
    return h('div', { class: 'bar' + (share ? ' share' : level >= 0.9 ? ' bad' : level >= 0.7 ? ' warn' : ''), role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': cap, 'aria-valuenow': used || 0, 'aria-label': (used || 0) + ' of ' + cap }, fill);
  }
  function every(msv, fn) {
    clearInterval(S.timer);
    S.timer = setInterval(() => { if (!document.hidden) fn(); }, msv);
  }
  function select(label, options, value, onchange, id) {
    return h('label', null, label, h('select', { id, onchange: (e) => onchange(e.target.value) },
      options.map(([v, t]) => h('option', { value: v, selected: v === value ? true : null }, t))));
  }
  function csvCell(v) {
    let c = v === null || v === undefined ? '' : String(v);
    if (/^[=+\-@\t\r]/.test(c)) c = "'" + c; // no formulas when opened in a spreadsheet
    return /[",\n\r]/.test(c) ? '"' + c.replace(/"/g, '""') + '"' : c;
  }
  function download(name, rows) {
    const csv = rows.map((r) => r.map(csvCell).join(',')).join('\r\n') + '\r\n';
    const url = URL.createObjectURL(new Blob([csv], { type: 'text/csv' }));
    const a = h('a', { href: url, download: name });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 5000);
  }
  function confirmDialog(title, message, action) {
    return new Promise((resolve) => {
      const d = h('dialog', { 'aria-labelledby': 'confirm-title' },
        h('div', { class: 'body' },
          h('h2', { id: 'confirm-title' }, title),
          h('p', null, message),
          h('div', { class: 'buttons' },
            h('button', { type: 'button', class: 'ghost', onclick: () => d.close('no') }, 'Cancel'),
            h('button', { type: 'button', class: 'danger', onclick: () => d.close('yes') }, action))));
      d.addEventListener('close', () => { d.remove(); resolve(d.returnValue === 'yes'); });
      document.body.appendChild(d);
      d.showModal();
    });
  }

  // ---- charts (hand-written SVG) -----------------------------------------------------------------
  const W = 420, H = 150, L = 50, R = 8, T = 8, B = 20;
  function nice(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    const m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10) * p;
  }
  function chart(id, title, tl, series, fmt, count) {
    const n = count;
    const start = tl.series.requests.length - n;
    const vals = series.map((sr) => tl.series[sr.key].slice(start));
    let max = 0, points = 0;
    for (const v of vals) for (const x of v) if (isNum(x)) { max = Math.max(max, x); if (x > 0) points++; }
    max = nice(max);
    const x = (i) => L + (n <= 1 ? 0 : (i / (n - 1)) * (W - L - R));
    const y = (v) => T + (1 - v / max) * (H - T - B);
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'data-points': points, id: 'chart-' + id });
    for (const f of [0, 0.5, 1]) {
      svg.appendChild(s('line', { class: 'grid', x1: L, x2: W - R, y1: y(max * f), y2: y(max * f) }));
      svg.appendChild(s('text', { class: 'axis', x: L - 6, y: y(max * f) + 3, 'text-anchor': 'end' }, fmt(max * f)));
    }
    const minutes = (n * tl.interval_s) / 60;
    for (const f of [0, 0.5, 1]) {
      const label = f === 1 ? 'now' : '-' + +(minutes * (1 - f)).toFixed(1) + ' min';
      svg.appendChild(s('text', { class: 'axis', x: x(f * (n - 1)), y: H - 6, 'text-anchor': f === 0 ? 'start' : f === 1 ? 'end' : 'middle' }, label));
    }
    const lasts = [];
    vals.forEach((v, si) => {
      const cls = 's' + (si + 1);
      let d = '', pen = false, last = null, drawn = 0;
      v.forEach((val, i) => {
        if (!isNum(val)) { pen = false; return; }
        d += (pen ? 'L' : 'M') + x(i).toFixed(1) + ' ' + y(val).toFixed(1);
        pen = true; last = [i, val]; drawn++;
      });
      if (d) svg.appendChild(s('path', { class: 'line ' + cls, d }));
      // Markers where there was traffic, when they fit; always the latest.
      v.forEach((val, i) => {
        if (isNum(val) && val > 0 && (drawn <= 90 || (last && i === last[0]))) svg.appendChild(s('circle', { class: cls, cx: x(i).toFixed(1), cy: y(val).toFixed(1), r: 2.4 }));
      });
      lasts.push(series[si].name + ' ' + (last ? fmt(last[1]) : '—'));
    });
    svg.appendChild(s('title', null, title + ': ' + lasts.join(', ')));
    return h('figure', { class: 'chart' },
      h('figcaption', null, h('span', null, title), h('span', { class: 'last' }, lasts.join(' · '))),
      series.length > 1 ? h('div', { class: 'legend' }, series.map((sr, i) => h('span', null, h('i', { class: 's' + (i + 1) }), sr.name))) : null,
      svg);
  }

  // ---- pages -------------------------------------------------------------------------------------
  const ov = { model: '', range: 360 };
  async function overview(main) {
    const head = h('div', { class: 'row' });
    const cards = h('div', { class: 'cards', id: 'cards' });
    const charts = h('div', { class: 'charts', id: 'charts' });
    const stamp = h('span', { class: 'muted small', 'aria-live': 'off' });
    put(main, h('h1', null, 'Overview'), head, cards, charts);
    let shown = null;
    async function load() {
      const q = 'overview?window=60' + (ov.model ? '&model=' + encodeURIComponent(ov.model) : '');
      const r = await call('GET', q);
      if (!r.ok) { cards.replaceChildren(h('p', { class: 'err' }, errOf(r))); return; }
      const d = r.data, tl = d.timeline, sm = tl.summary;
      const models = Array.from(new Set([...(d.configured_models || []), ...tl.models])).sort();
      if (shown !== models.join('\n')) {
        // Rebuilt only when the models change, so a refresh never takes a control from under the user.
        shown = models.join('\n');
        head.replaceChildren(
          select('Model', [['', 'All models'], ...models.map((m) => [m, m])], ov.model, (v) => { ov.model = v; load(); }, 'ov-model'),
          select('Range', [['30', 'Last 5 minutes'], ['90', 'Last 15 minutes'], ['360', 'Last hour']], String(ov.range), (v) => { ov.range = +v; load(); }, 'ov-range'),
          h('span', { class: 'grow' }), stamp);
      }
      stamp.textContent = 'Updated ' + clock(tl.now_ms) + ' · every 5 s';
      const cache = d.cache || {};
      const lookups = (cache.hits || 0) + (cache.misses || 0);
      const b = d.batches || {};
      const qd = Object.values(d.queues || {}).reduce((a, v) => a + (v || 0), 0);
      const card = (k, v, sub) => h('div', { class: 'card' }, h('div', { class: 'k' }, k), h('div', { class: 'v' }, v), sub ? h('div', { class: 's' }, sub) : null);
      cards.replaceChildren(
        card('Requests/s', num(sm.rps, 2), int(sm.requests) + ' in the last minute'),
        card('Error rate', pct(sm.error_rate), int(sm.errors) + ' errors'),
        card('Latency p50 / p99', ms(sm.p50_ms), 'p99 ' + ms(sm.p99_ms)),
        card('TTFT p50 / p99', ms(sm.ttft_p50_ms), 'p99 ' + ms(sm.ttft_p99_ms)),
        card('Tokens/s', num(sm.tokens_per_s), int(sm.prompt_tokens + sm.completion_tokens) + ' tokens'),
        card('Spend/hour', usd(sm.spend_per_hour), usd(sm.spend_usd) + ' in the last minute'),
        card('Cache hit ratio', lookups ? pct(cache.hits / lookups) : '—', lookups ? int(cache.hits) + ' hits / ' + int(lookups) + ' lookups' : (d.cache_enabled ? 'no lookups yet' : 'cache off')),
        card('Batch jobs in flight', int(b.active_jobs || 0), int(b.queued_requests || 0) + ' requests waiting'),
        card('Upstreams healthy', d.upstreams.healthy + ' / ' + d.upstreams.total, 'queued requests ' + int(qd)));
      const n = Math.min(ov.range, tl.series.requests.length);
      charts.replaceChildren(
        chart('rps', 'Requests/s', tl, [{ key: 'rps', name: 'req/s' }], (v) => num(v, 1), n),
        chart('errors', 'Error rate', tl, [{ key: 'error_rate', name: 'errors' }], pct, n),
        chart('latency', 'Latency', tl, [{ key: 'p50_ms', name: 'p50' }, { key: 'p99_ms', name: 'p99' }], ms, n),
        chart('ttft', 'Time to first token', tl, [{ key: 'ttft_p50_ms', name: 'p50' }, { key: 'ttft_p99_ms', name: 'p99' }], ms, n),
        chart('tokens', 'Tokens/s', tl, [{ key: 'tokens_per_s', name: 'tokens/s' }], (v) => num(v, 1), n),
        chart('spend', 'Spend/hour', tl, [{ key: 'spend_per_hour', name: 'USD/h' }], usd, n));
    }
    await load();
    // For the load-time measurement: when the first overview with its charts is on the page.
    if (!S.marked) { S.marked = true; performance.mark('llmproxy:overview'); }
    every(5000, load);
  }

  async function models(main) {
    const box = h('div');
    put(main, h('h1', null, 'Models and upstreams'), box);
    async function load() {
      const r = await call('GET', 'models');
      if (!r.ok) { box.replaceChildren(h('p', { class: 'err' }, errOf(r))); return; }
      const out = [];
      for (const m of r.data.models) {
        const q = m.queue;
        out.push(h('h2', null, m.name, ' ', h('span', { class: 'muted small' },
          m.strategy + (m.aliases.length ? ' · aliases: ' + m.aliases.join(', ') : '') + (m.fallbacks.length ? ' · fallbacks: ' + m.fallbacks.join(', ') : '') +
          ' · queue ' + q.depth + ' / ' + q.max_size + ' (max wait ' + ms(q.max_wait_ms) + ')')));
        const rows = m.deployments.map((d) => {
          const budgets = (kind) => {
            const list = (d.budgets && d.budgets[kind]) || [];
            if (!list.length) return h('span', { class: 'muted' }, 'no limit');
            return list.map((x) => h('div', { class: 'small' }, x.budget.replace(/^dep:[^:]*:[^:]*:[^:]*:/, 'deployment ').replace(/^upstream:/, 'upstream '),
              ': ' + num(x.available_now) + ' / ' + num(x.capacity) + ' left', bar(x.available_now, x.capacity, true)));
          };
          const health = d.cooldown_remaining_ms ? badge('warn', 'cooling down') : d.healthy ? badge('ok', 'healthy') : badge('bad', 'unhealthy');
          return h('tr', null,
            h('td', null, h('strong', null, d.upstream), h('div', { class: 'muted small' }, d.model + ' · weight ' + d.weight)),
            h('td', null, health),
            h('td', { class: 'num' }, d.cooldown_remaining_ms ? ms(d.cooldown_remaining_ms) : '—'),
            h('td', { class: 'num' }, int(d.in_flight)),
            h('td', null, budgets('requests')),
            h('td', null, budgets('tokens')),
            h('td', { class: 'wrap' }, d.last_error ? h('span', { class: 'err' }, d.last_error) : '—'));
        });
        out.push(table('Deployments of ' + m.name, ['Deployment', 'Health', { t: 'Cooldown left', num: 1 }, { t: 'In flight', num: 1 }, 'RPM budget', 'TPM budget', 'Last error'], rows));
      }
      out.push(h('h2', null, 'Upstreams'));
      out.push(table('Upstreams', ['Upstream', 'Health', 'Check', { t: 'Addresses', num: 1 }, 'Limits', 'Last error'], r.data.upstreams.map((u) => {
        const hc = u.health_check;
        return h('tr', null,
          h('td', null, h('strong', null, u.name), h('div', { class: 'muted small mono' }, u.provider + ' · ' + u.url)),
          h('td', null, u.healthy ? badge('ok', 'healthy') : badge('bad', 'unhealthy')),
          h('td', { class: 'small' }, hc.active ? 'GET ' + hc.path + ' every ' + ms(hc.interval_ms) + ', timeout ' + ms(hc.timeout_ms) + '; down after ' + hc.unhealthy_after + ', up after ' + hc.healthy_after : h('span', { class: 'muted' }, 'no active check')),
          h('td', { class: 'num' }, int(u.addresses)),
          h('td', { class: 'small' }, (u.limits.rpm ? 'rpm ' + int(u.limits.rpm) : '') + (u.limits.rpm && u.limits.tpm ? ' · ' : '') + (u.limits.tpm ? 'tpm ' + int(u.limits.tpm) : '') || '—'),
          h('td', { class: 'wrap' }, u.last_error ? h('span', { class: 'err' }, u.last_error) : '—'));
      })));
      box.replaceChildren(...out);
    }
    await load();
    every(5000, load);
  }

  // Keys, teams and end users share one page shape: a list with spend and budget bars, a form to
  // create and edit, delete with confirmation.
  const KINDS = {
    keys: {
      title: 'Keys', one: 'key', list: 'key/list?return_full_object=true&size=1000', id: 'key_id', alias: 'key_alias',
      pick: (d) => d.keys || [], create: 'key/generate', update: 'key/update', updateId: 'key',
      del: 'key/delete', delBody: (id) => ({ keys: [id] }), expiry: true,
    },
    teams: {
      title: 'Teams', one: 'team', list: 'team/list', id: 'team_id', alias: 'team_alias',
      pick: (d) => (Array.isArray(d) ? d : d.teams || d.data || []), create: 'team/new', update: 'team/update', updateId: 'team_id',
      del: 'team/delete', delBody: (id) => ({ team_ids: [id] }),
    },
    users: {
      title: 'End users', one: 'end user', list: 'customer/list', id: 'user_id', alias: 'alias', idInput: true,
      pick: (d) => (Array.isArray(d) ? d : d.customers || d.data || []), create: 'customer/new', update: 'customer/update', updateId: 'user_id',
      del: 'customer/delete', delBody: (id) => ({ user_ids: [id] }),
    },
  };
  function limitsText(x) {
    const parts = [];
    if (x.rpm || x.rpm_limit) parts.push('rpm ' + int(x.rpm || x.rpm_limit));
    if (x.tpm || x.tpm_limit) parts.push('tpm ' + int(x.tpm || x.tpm_limit));
    return parts.join(' · ') || '—';
  }
  function accounts(kindName) {
    const K = KINDS[kindName];
    return async function (main) {
      const box = h('div');
      put(main, h('div', { class: 'row' }, h('h1', { class: 'grow' }, K.title), h('button', { type: 'button', id: 'create', onclick: () => edit(null) }, 'Create ' + K.one)), box);
      let items = [];
      async function load() {
        const r = await manage('GET', K.list);
        if (unavailable(r)) {
          $('#create').hidden = true;
          box.replaceChildren(h('div', { class: 'note', id: 'unavailable' }, r.data.error.code === 'not_available'
            ? K.title + ' are not available: ' + errOf(r) + '.'
            : K.title + ' are not available in this build of the gateway; this page lights up when it serves /' + K.list.split('/')[0] + '/*.'));
          return;
        }
        if (!r.ok) { box.replaceChildren(h('p', { class: 'err' }, errOf(r))); return; }
        items = K.pick(r.data);
        box.replaceChildren(table(K.title, ['Name', 'Models', 'Spend / budget', 'Limits', K.expiry ? 'Expires' : 'Created', ''], items.map((x) => {
          const id = x[K.id];
          const spend = x.spend || 0;
          return h('tr', { 'data-id': id },
            h('td', { class: 'wrap' }, h('strong', { class: 'alias' }, text(x[K.alias])), h('div', { class: 'muted small mono' }, id),
              x.team_id && kindName === 'keys' ? h('div', { class: 'muted small' }, 'team ' + x.team_id) : null,
              x.metadata && Object.keys(x.metadata).length ? h('div', { class: 'muted small meta' }, JSON.stringify(x.metadata)) : null),
            h('td', { class: 'small' }, x.models && x.models.length ? x.models.join(', ') : h('span', { class: 'muted' }, 'all')),
            h('td', null, usd(spend) + (isNum(x.max_budget) ? ' / ' + usd(x.max_budget) : ''), bar(spend, x.max_budget),
              x.budget_duration ? h('div', { class: 'muted small' }, 'per ' + x.budget_duration) : null),
            h('td', { class: 'small' }, limitsText(x)),
            h('td', { class: 'small' }, when(K.expiry ? x.expires : x.created_at)),
            h('td', { class: 'actions' },
              h('button', { type: 'button', class: 'link', onclick: () => edit(x), 'aria-label': 'Edit ' + (x[K.alias] || id) }, 'Edit'),
              h('button', { type: 'button', class: 'link', onclick: () => remove(x), 'aria-label': 'Delete ' + (x[K.alias] || id) }, 'Delete')));
        }), 'No ' + K.title.toLowerCase() + ' yet.'));
      }
      async function remove(x) {
        const id = x[K.id];
        const name = x[K.alias] ? x[K.alias] + ' (' + id + ')' : id;
        if (!(await confirmDialog('Delete ' + K.one + '?', 'Delete ' + K.one + ' ' + name + '? ' + (kindName === 'keys' ? 'Requests with it are refused from then on.' : 'This cannot be undone.'), 'Delete'))) return;
        const r = await manage('POST', K.del, K.delBody(id));
        toast(r.ok ? 'Deleted ' + name : 'Delete failed: ' + errOf(r));
        load();
      }
      async function edit(x) {
        await S.teamsProbe;
        const isNew = !x;
        const f = (name, label, value, attrs) => h('label', null, label, h('input', Object.assign({ name, value: value === null || value === undefined ? '' : String(value) }, attrs || {})));
        const picked = new Set((x && x.models) || []);
        const modelsBox = h('fieldset', { class: 'models-pick' }, h('legend', { class: 'small muted' }, 'Models (none ticked: all)'),
          Array.from(new Set([...S.configured, ...picked])).map((m) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'models', value: m, checked: picked.has(m) }), m)));
        const err = h('div', { role: 'alert' });
        const form = h('form', { method: 'dialog' },
          h('h2', { id: 'edit-title' }, (isNew ? 'Create ' : 'Edit ') + K.one),
          K.idInput && isNew ? f('id', 'Id (the request\'s user field)', '', { required: true, autocomplete: 'off' }) : null,
          f('alias', 'Name', x && x[K.alias], { autocomplete: 'off' }),
          modelsBox,
          h('div', { class: 'grid2' },
            f('max_budget', 'Budget (USD)', x && x.max_budget, { type: 'number', min: 0, step: 'any' }),
            f('budget_duration', 'Budget period (e.g. 30d; empty: never resets)', x && x.budget_duration, { placeholder: '30d' }),
            f('rpm', 'Requests per minute', x && (x.rpm || x.rpm_limit), { type: 'number', min: 0, step: 1 }),
            f('tpm', 'Tokens per minute', x && (x.tpm || x.tpm_limit), { type: 'number', min: 0, step: 1 }),
            K.expiry ? f('duration', isNew ? 'Expires after (e.g. 30d; empty: never)' : 'New expiry from now (empty: keep)', '', { placeholder: '30d' }) : null,
            kindName === 'keys' && S.features.teams ? f('team_id', 'Team id', x && x.team_id, { autocomplete: 'off' }) : null),
          h('label', null, 'Metadata (JSON object)', h('textarea', { name: 'metadata' }, x && x.metadata && Object.keys(x.metadata).length ? JSON.stringify(x.metadata, null, 2) : '')),
          err,
          h('div', { class: 'buttons' },
            h('button', { type: 'button', class: 'ghost', onclick: () => d.close() }, 'Cancel'),
            h('button', { type: 'submit', id: 'save' }, isNew ? 'Create' : 'Save')));
        const d = h('dialog', { 'aria-labelledby': 'edit-title' }, form);
        d.addEventListener('close', () => d.remove());
        form.addEventListener('submit', async (ev) => {
          ev.preventDefault();
          const fd = new FormData(form);
          const body = {};
          const val = (k) => String(fd.get(k) || '').trim();
          const numOrNull = (k, isInt) => {
            const v = val(k);
            if (v === '') return null;
            const n = Number(v);
            if (!isFinite(n) || n < 0 || (isInt && !Number.isInteger(n))) throw new Error(k + ' must be a ' + (isInt ? 'whole ' : '') + 'number ≥ 0');
            return n;
          };
          try {
            if (K.idInput && isNew) body[K.id] = val('id');
            body[K.alias] = val('alias') || null;
            body.models = fd.getAll('models');
            body.max_budget = numOrNull('max_budget');
            body.budget_duration = val('budget_duration') || null;
            body.rpm = numOrNull('rpm', true);
            body.tpm = numOrNull('tpm', true);
            if (K.expiry && (isNew || val('duration'))) body.duration = val('duration') || null;
            if (kindName === 'keys' && S.features.teams && val('team_id')) body.team_id = val('team_id');
            const m = val('metadata');
            if (m) {
              let parsed;
              try { parsed = JSON.parse(m); } catch (_) { throw new Error('metadata is not valid JSON'); }
              if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('metadata must be a JSON object');
              body.metadata = parsed;
            } else if (!isNew) body.metadata = null;
          } catch (e) { err.replaceChildren(h('p', { class: 'err' }, e.message)); return; }
          if (isNew) {
            for (const k of Object.keys(body)) if (body[k] === null || (Array.isArray(body[k]) && !body[k].length)) delete body[k];
          } else {
            // Only what changed: re-sending budget_duration, say, would restart the budget period.
            const meta = x.metadata && Object.keys(x.metadata).length ? x.metadata : null;
            const was = {
              [K.alias]: x[K.alias] ?? null, models: [...(x.models || [])].sort(), max_budget: x.max_budget ?? null,
              budget_duration: x.budget_duration ?? null, rpm: x.rpm ?? x.rpm_limit ?? null, tpm: x.tpm ?? x.tpm_limit ?? null, metadata: meta,
            };
            const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
            for (const k of Object.keys(was)) {
              if (k in body && same(k === 'models' ? [...body[k]].sort() : body[k], was[k])) delete body[k];
            }
            if ((body.team_id || null) === (x.team_id || null)) delete body.team_id;
            body[K.updateId] = x[K.id];
          }
          $('#save', form).disabled = true;
          const r = await manage('POST', isNew ? K.create : K.update, body);
          $('#save', form).disabled = false;
          if (!r.ok) { err.replaceChildren(h('p', { class: 'err' }, errOf(r))); return; }
          d.close();
          if (isNew && kindName === 'keys' && r.data.key) showSecret(r.data);
          else toast((isNew ? 'Created ' : 'Saved ') + K.one);
          load();
        });
        document.body.appendChild(d);
        d.showModal();
      }
      await load();
    };
  }
  function showSecret(k) {
    // The secret exists only in this dialog: closing it removes it from the page.
    const input = h('input', { id: 'new-secret', readonly: true, value: k.key, 'aria-label': 'The new key', spellcheck: 'false' });
    const status = h('span', { role: 'status', class: 'small muted' });
    const d = h('dialog', { 'aria-labelledby': 'secret-title' }, h('div', { class: 'body' },
      h('h2', { id: 'secret-title' }, 'Key created: ' + (k.key_alias || k.key_id)),
      h('p', null, 'Copy it now: this is the only time the gateway shows it (it keeps only a hash).'),
      h('div', { class: 'secret' }, input, h('button', { type: 'button', id: 'copy', onclick: async () => {
        input.select();
        try { await navigator.clipboard.writeText(k.key); status.textContent = 'Copied.'; } catch (_) {
          status.textContent = document.execCommand && document.execCommand('copy') ? 'Copied.' : 'Select and copy it by hand.';
        }
      } }, 'Copy')),
      status,
      h('div', { class: 'buttons' }, h('button', { type: 'button', id: 'done', onclick: () => d.close() }, 'Done'))));
    d.addEventListener('close', () => d.remove());
    document.body.appendChild(d);
    d.showModal();
    input.select();
  }

  const sp = { group: 'key', start: '', end: '' };
  async function spend(main) {
    if (!sp.end) {
      const now = new Date();
      sp.end = ymd(now);
      sp.start = ymd(new Date(now.getTime() - 6 * 86400000));
    }
    const out = h('div');
    const report = await manage('GET', 'global/spend/report?start_date=' + sp.end + '&end_date=' + sp.end + '&group_by=model');
    const logs = !unavailable(report);
    const groups = logs ? [['key', 'Key'], ['team', 'Team'], ['model', 'Model'], ['user', 'End user']] : [['key', 'Key'], ['model', 'Model']];
    if (!groups.some(([g]) => g === sp.group)) sp.group = 'key';
    const dateInput = (name, label) => h('label', null, label, h('input', { type: 'date', id: 'spend-' + name, value: sp[name], onchange: (e) => { sp[name] = e.target.value; } }));
    let rows = [];
    const csvBtn = h('button', { type: 'button', class: 'ghost', id: 'csv', onclick: () => download('llmproxy-spend-by-' + sp.group + '-' + sp.start + '-to-' + sp.end + '.csv', [['day', sp.group, 'spend_usd', 'requests', 'prompt_tokens', 'completion_tokens'], ...rows]) }, 'Download CSV');
    put(main, h('h1', null, 'Spend'),
      h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); load(); } },
        dateInput('start', 'From'), dateInput('end', 'To (included)'),
        select('By', groups, sp.group, (v) => { sp.group = v; load(); }, 'spend-group'),
        h('button', { type: 'submit' }, 'Apply'), h('span', { class: 'grow' }), csvBtn),
      h('div', { class: 'note', id: 'spend-source' }, logs
        ? 'From the spend log (/global/spend/report): every request with its key, team, end user and model, per UTC day.'
        : 'The spend log is not in this build yet: this page shows spend by key and model per UTC day as this gateway process recorded it since it started (at most 32 days; a restart starts over), and each key\'s spend in its current budget period. Team and end-user spend, and history across restarts, come with the spend log (/spend/logs, /global/spend/report).'),
      out);
    async function load() {
      rows = [];
      const totals = new Map();
      // Keys are shown by name beside their id (a deleted key keeps only its id).
      const keys = sp.group === 'key' ? await manage('GET', 'key/list?return_full_object=true&size=1000') : null;
      const alias = new Map(keys && keys.ok ? (keys.data.keys || []).map((x) => [x.key_id, x.key_alias]) : []);
      const label = (k) => (alias.get(k) ? [text(alias.get(k)), h('div', { class: 'muted small mono' }, k)] : text(k));
      if (logs) {
        const r = await manage('GET', 'global/spend/report?start_date=' + sp.start + '&end_date=' + sp.end + '&group_by=' + sp.group);
        if (!r.ok) { out.replaceChildren(h('p', { class: 'err' }, errOf(r))); return; }
        for (const day of r.data || []) {
          const list = day[sp.group + 's'] || [];
          for (const g of list) {
            const name = g[sp.group] ?? g[sp.group + '_name'] ?? g[sp.group + '_id'] ?? '(none)';
            rows.push([day.group_by_day, name, g.total_spend || 0, g.requests ?? '', g.prompt_tokens ?? '', g.completion_tokens ?? '']);
          }
        }
      } else {
        const r = await call('GET', 'spend?start=' + sp.start + '&end=' + sp.end);
        if (!r.ok) { out.replaceChildren(h('p', { class: 'err' }, errOf(r))); return; }
        for (const day of r.data.days) {
          for (const g of sp.group === 'model' ? day.models : day.keys) {
            rows.push([day.date, sp.group === 'model' ? g.model : g.key_id, g.spend_usd, g.requests, g.prompt_tokens, g.completion_tokens]);
          }
        }
      }
      for (const r of rows) totals.set(r[1], (totals.get(r[1]) || 0) + (+r[2] || 0));
      const by = Object.fromEntries(groups)[sp.group];
      const top = Math.max(0, ...totals.values());
      const parts = [
        h('h2', null, 'Total by ' + by.toLowerCase()),
        table('Total spend by ' + sp.group, [by, { t: 'Spend', num: 1 }, ''], Array.from(totals).sort((a, b) => b[1] - a[1]).map(([k, v]) =>
          h('tr', null, h('td', { class: 'wrap' }, label(k)), h('td', { class: 'num' }, usd(v)), h('td', null, bar(v, top || 1, false, true)))), 'No spend in this range.'),
        h('h2', null, 'Per day'),
        table('Spend per day by ' + sp.group, ['Day', by, { t: 'Spend', num: 1 }, { t: 'Requests', num: 1 }, { t: 'Prompt tokens', num: 1 }, { t: 'Completion tokens', num: 1 }], rows.map((r) =>
          h('tr', null, h('td', null, r[0]), h('td', { class: 'wrap' }, label(r[1])), h('td', { class: 'num' }, usd(+r[2])), h('td', { class: 'num' }, int(+r[3])), h('td', { class: 'num' }, int(+r[4])), h('td', { class: 'num' }, int(+r[5])))), 'No spend in this range.'),
      ];
      if (!logs && keys && keys.ok) {
        parts.push(h('h2', null, 'Keys: spend in the current budget period'), table('Key spend in the current budget period', ['Key', { t: 'Spend', num: 1 }, 'Budget'], (keys.data.keys || []).map((x) =>
          h('tr', null, h('td', { class: 'wrap' }, text(x.key_alias), h('div', { class: 'muted small mono' }, x.key_id)), h('td', { class: 'num' }, usd(x.spend)),
            h('td', null, isNum(x.max_budget) ? usd(x.max_budget) + (x.budget_duration ? ' per ' + x.budget_duration : '') : '—', bar(x.spend, x.max_budget)))), 'No keys.'));
      }
      out.replaceChildren(...parts);
    }
    await load();
  }

  const rq = { model: '', key: '', status: '' };
  async function requests(main) {
    const box = h('div');
    const keyInput = h('input', { id: 'rq-key', value: rq.key, placeholder: 'key id', autocomplete: 'off', onchange: (e) => { rq.key = e.target.value.trim(); load(); } });
    put(main, h('h1', null, 'Recent requests'),
      h('div', { class: 'row' },
        select('Model', [['', 'All models'], ...S.configured.map((m) => [m, m])], rq.model, (v) => { rq.model = v; load(); }, 'rq-model'),
        h('label', null, 'Key', keyInput),
        select('Status', [['', 'Any'], ['2xx', '2xx'], ['error', '4xx and 5xx'], ['4xx', '4xx'], ['5xx', '5xx'], ['429', '429']], rq.status, (v) => { rq.status = v; load(); }, 'rq-status'),
        h('span', { class: 'grow' }), h('span', { class: 'muted small' }, 'Access-log fields only, never content · every 5 s')),
      box);
    async function load() {
      const q = new URLSearchParams({ limit: '200' });
      if (rq.model) q.set('model', rq.model);
      if (rq.key) q.set('key', rq.key);
      if (rq.status) q.set('status', rq.status);
      const r = await call('GET', 'requests?' + q);
      if (!r.ok) { box.replaceChildren(h('p', { class: 'err' }, errOf(r))); return; }
      box.replaceChildren(table('Recent requests', ['Time', 'Status', 'Model', 'Key', { t: 'Duration', num: 1 }, { t: 'TTFT', num: 1 }, { t: 'Tokens in/out', num: 1 }, { t: 'Cost', num: 1 }, 'Cache', 'Upstream', 'Path', 'Request id'],
        r.data.requests.map((x) => h('tr', null,
          h('td', { class: 'mono' }, clock(x.at_ms)),
          h('td', null, badge(x.status >= 500 ? 'bad' : x.status >= 400 ? 'warn' : 'ok', String(x.status)), x.error ? h('div', { class: 'muted small' }, x.error) : null),
          h('td', null, text(x.model)),
          h('td', { class: 'mono small' }, text(x.key_id)),
          h('td', { class: 'num' }, ms(x.duration_ms)),
          h('td', { class: 'num' }, ms(x.ttft_ms)),
          h('td', { class: 'num' }, int(x.prompt_tokens) + ' / ' + int(x.completion_tokens)),
          h('td', { class: 'num' }, x.spend_usd ? usd(x.spend_usd) : '—'),
          h('td', null, text(x.cache)),
          h('td', null, text(x.upstream)),
          h('td', { class: 'mono small' }, x.method + ' ' + x.path),
          h('td', { class: 'mono small' }, x.request_id))), 'No requests match.'));
    }
    await load();
    every(5000, load);
  }

  async function config(main) {
    const result = h('div', { id: 'reload-result', 'aria-live': 'polite' });
    const warnings = h('div');
    const pre = h('pre', { class: 'config', id: 'config-yaml', tabindex: '0', 'aria-label': 'The running config' });
    const btn = h('button', { type: 'button', id: 'reload' }, 'Reload config');
    put(main, h('div', { class: 'row' }, h('h1', { class: 'grow' }, 'Config'), btn),
      h('p', { class: 'muted' }, 'The running config, every secret shown as ***. Reload re-reads the file and validates it first, like llmproxy check: an invalid file is reported here and the running config stays.'),
      result, warnings, pre);
    async function load() {
      const r = await call('GET', 'config');
      if (!r.ok) { pre.textContent = errOf(r); return; }
      pre.textContent = r.data.yaml;
      warnings.replaceChildren(...(r.data.warnings.length ? [h('div', { class: 'note' }, h('strong', null, 'Warnings'),
        h('ul', null, r.data.warnings.map((w) => h('li', null, h('code', null, w.path || '(top)'), ': ', w.message))))] : []));
    }
    btn.addEventListener('click', async () => {
      btn.disabled = true;
      result.replaceChildren(h('p', { class: 'muted' }, 'Reloading…'));
      const r = await call('POST', 'reload');
      btn.disabled = false;
      if (r.ok) {
        result.replaceChildren(h('div', { class: 'okbox' }, 'Reloaded: ' + r.data.summary));
        load();
      } else if (r.data && r.data.errors) {
        result.replaceChildren(h('div', { class: 'alert', role: 'alert' }, h('strong', null, 'The config has errors; the running config stays.'),
          h('ul', null, r.data.errors.map((e) => h('li', { class: 'config-error' }, e.path ? h('code', null, e.path) : null, e.path ? ': ' : '', e.message)))));
      } else result.replaceChildren(h('div', { class: 'alert', role: 'alert' }, errOf(r)));
    });
    await load();
  }

  // ---- sign-in, routing, start -------------------------------------------------------------------
  function signIn(creds) {
    clearInterval(S.timer);
    $('#nav').hidden = true;
    $('#signout').hidden = true;
    const which = (creds || []).map((c) => (c === 'master_key' ? 'the master key' : 'the admin token')).join(' or ') || 'the master key or admin token';
    const err = h('div', { role: 'alert' });
    const input = h('input', { type: 'password', name: 'secret', id: 'secret', required: true, autocomplete: 'current-password' });
    const form = h('form', null, h('h1', null, 'Sign in'), h('p', { class: 'muted' }, 'Enter ' + which + ' (server.master_key / admin.token).'),
      h('label', null, 'Secret', input), err, h('button', { type: 'submit', id: 'signin' }, 'Sign in'));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const r = await call('POST', 'login', { secret: input.value });
      if (!r.ok) { err.replaceChildren(h('p', { class: 'err' }, errOf(r))); input.select(); return; }
      S.csrf = r.data.csrf;
      input.value = '';
      await start();
    });
    $('#main').replaceChildren(h('div', { class: 'panel signin' }, form));
    document.title = 'Sign in · llmproxy console';
    input.focus();
  }

  const PAGES = { overview, models, keys: accounts('keys'), teams: accounts('teams'), users: accounts('users'), spend, requests, config };
  const TITLES = { overview: 'Overview', models: 'Models', keys: 'Keys', teams: 'Teams', users: 'End users', spend: 'Spend', requests: 'Requests', config: 'Config' };
  async function route() {
    const m = location.hash.match(/^#\/(\w+)/);
    if (!m && location.hash && location.hash !== '#') return; // an in-page anchor
    const name = m && PAGES[m[1]] ? m[1] : 'overview';
    clearInterval(S.timer);
    $('#toast').textContent = '';
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.getAttribute('href') === '#/' + name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    const main = $('#main');
    main.replaceChildren();
    main.removeAttribute('data-ready');
    document.title = TITLES[name] + ' · llmproxy console';
    await PAGES[name](main);
    // The page's first data is on screen (tests wait for this).
    if ($('#main') === main && main.firstChild) main.setAttribute('data-ready', name);
  }

  async function start() {
    const r = await call('GET', 'session');
    if (!r.ok) { $('#main').replaceChildren(h('p', { class: 'err' }, 'The console is unavailable: ' + errOf(r))); return; }
    S.csrf = r.data.csrf;
    S.signInRequired = r.data.sign_in_required;
    if (!r.data.signed_in) { signIn(r.data.credentials); return; }
    $('#nav').hidden = false;
    $('#signout').hidden = !S.signInRequired;
    S.configured = r.data.models || [];
    // Whether this build serves teams (a key can then name its team); not waited for here.
    S.teamsProbe = manage('GET', 'team/list').then((t) => { S.features.teams = !unavailable(t); });
    await route();
  }

  window.addEventListener('hashchange', route);
  document.addEventListener('DOMContentLoaded', () => {
    $('#signout').addEventListener('click', async () => {
      await call('POST', 'logout');
      start();
    });
    start();
  });
})();
