// kplane X-ray: the live topology. State arrives as a snapshot (embedded in the page, then over
// Server-Sent Events) followed by batches of changed object summaries. Rendering is coalesced to
// one pass per animation frame, and each section only replaces the cards whose HTML changed.
'use strict';

const SHOWN = 12; // rows per group before it folds
const KIND_LABEL = { ingresses: 'Ingress', services: 'Service', endpointslices: 'EndpointSlice', pods: 'Pod', nodes: 'Node' };

const state = { objects: new Map(), seq: 0 };
const opened = new Set(); // groups the user unfolded
let nsFilter = '';
let queued = false;

function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function applySnapshot(s) {
  state.objects = new Map((s.objects || []).map((o) => [o.id, o]));
  state.seq = s.seq || 0;
}

// The object shown in the side panel, re-read when its summary changes.
let selected = null;
let rereadTimer = null;
// Bumped by every click: a slow answer for an earlier click never overwrites a later one.
let panelToken = 0;

function applyBatch(b) {
  for (const o of b.upsert || []) state.objects.set(o.id, o);
  for (const id of b.delete || []) state.objects.delete(id);
  state.seq = b.seq;
  if (selected && [...(b.upsert || []).map((o) => o.id), ...(b.delete || [])].includes(selected.id)) {
    clearTimeout(rereadTimer);
    const s = selected;
    rereadTimer = setTimeout(() => showObject(s.kind, s.ns, s.name), 300);
  }
}

function schedule() {
  if (queued) return;
  queued = true;
  requestAnimationFrame(() => {
    queued = false;
    render();
  });
}

const byName = (a, b) => (a.namespace + '/' + a.name).localeCompare(b.namespace + '/' + b.name);

function index() {
  const by = { ingresses: [], services: [], endpointslices: [], pods: [], nodes: [] };
  const namespaces = new Set();
  for (const o of state.objects.values()) {
    if (o.namespace) namespaces.add(o.namespace);
    if (!by[o.kind]) continue;
    if (nsFilter && o.kind !== 'nodes' && o.namespace !== nsFilter) continue;
    by[o.kind].push(o);
  }
  for (const k in by) by[k].sort(byName);
  const pods = new Map(by.pods.map((p) => [p.namespace + '/' + p.name, p]));
  const slices = new Map();
  for (const s of by.endpointslices) {
    const key = s.namespace + '/' + (s.service || '');
    if (!slices.has(key)) slices.set(key, []);
    slices.get(key).push(s);
  }
  const fromIngress = new Map();
  const refer = (ing, ns, backend, what) => {
    if (!backend || !backend.service) return;
    const key = ns + '/' + backend.service;
    if (!fromIngress.has(key)) fromIngress.set(key, []);
    fromIngress.get(key).push({ ing, what });
  };
  for (const ing of by.ingresses) {
    for (const r of ing.rules || []) for (const p of r.paths || []) refer(ing, ing.namespace, p.backend, (r.host || '*') + p.path);
    refer(ing, ing.namespace, ing.defaultBackend, 'default backend');
  }
  const served = new Set();
  for (const list of slices.values()) for (const s of list) for (const e of s.endpoints || []) if (e.pod) served.add(s.namespace + '/' + e.pod);
  const podsByNode = new Map();
  for (const p of by.pods) {
    const n = p.node || '';
    if (!podsByNode.has(n)) podsByNode.set(n, []);
    podsByNode.get(n).push(p);
  }
  return { by, pods, slices, fromIngress, served, podsByNode, namespaces };
}

function objLink(kind, ns, name, text) {
  return `<a class="obj" data-kind="${esc(kind)}" data-ns="${esc(ns)}" data-name="${esc(name)}" title="stored JSON, key and revision">${esc(text ?? name)}</a>`;
}

function routeLink(params, text) {
  return `<a class="route" data-route="${esc(new URLSearchParams(params).toString())}" title="trace and probe this route">⇢ ${esc(text)}</a>`;
}

function tag(kind) {
  return `<span class="tag k-${kind}">${KIND_LABEL[kind]}</span>`;
}

function count(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function dot(ok, title) {
  return `<span class="dot ${ok ? 'ok' : 'bad'}" title="${esc(title)}"></span>`;
}

// A big group as one line of small dots (green ready, red not), each a link to its pod; the
// full list stays folded until asked for.
function pips(items) {
  return `<div class="pips">${items
    .map((it) => (it.name ? `<a class="obj pip ${it.ok ? 'ok' : 'bad'}" data-kind="pods" data-ns="${esc(it.ns)}" data-name="${esc(it.name)}" title="${esc(it.title)}"></a>` : `<span class="pip ${it.ok ? 'ok' : 'bad'}" title="${esc(it.title)}"></span>`))
    .join('')}</div>`;
}

function bigGroup(group, rows, items, wrapTable) {
  if (rows.length <= SHOWN) return wrapTable ? `<table class="pods">${rows.join('')}</table>` : rows.join('');
  const open = opened.has(group);
  const button = `<button class="fold" data-group="${esc(group)}">${open ? 'hide the list' : `list all ${rows.length}`}</button>`;
  const list = open ? (wrapTable ? `<table class="pods">${rows.join('')}</table>` : rows.join('')) : '';
  return pips(items) + button + list;
}

function backendText(b) {
  if (!b) return '';
  if (b.service) return b.service + (b.port ? ':' + b.port : '');
  return b.resource || '?';
}

function ingressCard(ing) {
  const rows = [];
  for (const r of ing.rules || []) {
    for (const p of r.paths || []) {
      const host = r.host || '*';
      const route = r.host ? { host: r.host, path: p.path } : { service: p.backend.service || '', namespace: ing.namespace, port: p.backend.port || '' };
      rows.push(`<li>${routeLink(route, host + p.path)} <span class="meta">${esc(p.pathType || '')}</span> → <a href="#svc-${esc(ing.namespace)}-${esc(p.backend.service || '')}">${esc(backendText(p.backend))}</a></li>`);
    }
  }
  if (ing.defaultBackend) {
    const b = ing.defaultBackend;
    const link = b.service ? routeLink({ service: b.service, namespace: ing.namespace, port: b.port || '' }, 'default backend') : 'default backend';
    rows.push(`<li>${link} → <a href="#svc-${esc(ing.namespace)}-${esc(b.service || '')}">${esc(backendText(b))}</a></li>`);
  }
  const meta = [];
  if (ing.class) meta.push('class ' + esc(ing.class));
  if ((ing.address || []).length) meta.push('address ' + esc(ing.address.join(', ')));
  if ((ing.tlsHosts || []).length) meta.push('TLS ' + esc(ing.tlsHosts.join(', ')));
  return `<div class="card ingress" id="ing-${esc(ing.namespace)}-${esc(ing.name)}">
<div class="head">${tag('ingresses')} ${objLink('ingresses', ing.namespace, ing.name, ing.namespace + '/' + ing.name)} <span class="meta">${meta.join(' · ')}</span></div>
<ul class="rules">${rows.join('') || '<li class="warn">no rules and no default backend</li>'}</ul></div>`;
}

function serviceCard(svc, ix) {
  const key = svc.namespace + '/' + svc.name;
  const ports = (svc.ports || []).map((p) => {
    let text = `${p.port}`;
    if (p.targetPort && String(p.targetPort) !== String(p.port)) text += '→' + p.targetPort;
    text += '/' + p.protocol;
    if (p.nodePort) text += ' · NodePort ' + p.nodePort;
    if (p.name) text = p.name + ' ' + text;
    return routeLink({ service: svc.name, namespace: svc.namespace, port: String(p.port) }, text);
  });
  const from = (ix.fromIngress.get(key) || []).map((r) => `<span class="from">← ${objLink('ingresses', r.ing.namespace, r.ing.name)} <span class="meta">${esc(r.what)}</span></span>`);
  const slices = ix.slices.get(key) || [];
  let body = '';
  for (const s of slices) {
    const eps = s.endpoints || [];
    const ready = eps.filter((e) => e.ready).length;
    const rows = eps.map((e) => {
      const pod = e.pod ? ix.pods.get(s.namespace + '/' + e.pod) : null;
      const phase = pod ? pod.phase + (pod.terminating ? ', terminating' : '') : '';
      return `<tr>${'<td>' + dot(e.ready, e.ready ? 'ready' : 'not ready') + '</td>'}<td>${e.pod ? objLink('pods', s.namespace, e.pod) : '<span class="meta">(no pod)</span>'}</td><td class="ip">${esc(e.ip)}</td><td>${e.node ? tag('nodes') + ' ' + objLink('nodes', '', e.node) : ''}</td><td class="meta">${esc(phase)}</td></tr>`;
    });
    const sports = (s.ports || []).map((p) => `${p.name ? p.name + ' ' : ''}${p.port}/${p.protocol || 'TCP'}`).join(', ');
    body += `<div class="slice"><div class="sub">${tag('endpointslices')} ${objLink('endpointslices', s.namespace, s.name)} <span class="meta">${count(eps.length, 'endpoint', 'endpoints')}, ${ready} ready${sports ? ' · ports ' + esc(sports) : ''}</span></div>`;
    const items = eps.map((e) => ({ ok: e.ready, ns: s.namespace, name: e.pod, title: `${e.pod || '(no pod)'} ${e.ip || ''} ${e.node || ''}` }));
    body += eps.length ? bigGroup('slice:' + s.id, rows, items, true) : '<div class="warn">no endpoints: no ready pod matches the selector</div>';
    body += '</div>';
  }
  if (!slices.length) {
    if (svc.type === 'ExternalName') body = `<div class="meta">ExternalName → ${esc(svc.externalName)}</div>`;
    else if (!svc.selector) body = '<div class="meta">no selector: its endpoints are written by hand (or by the API server)</div>';
    else body = '<div class="warn">no EndpointSlice: the selector matches no pod</div>';
  }
  const cip = svc.clusterIP ? ' · ' + esc(svc.clusterIP) : '';
  return `<div class="card service" id="svc-${esc(svc.namespace)}-${esc(svc.name)}">
<div class="head">${tag('services')} ${objLink('services', svc.namespace, svc.name, key)} <span class="meta">${esc(svc.type)}${cip}</span></div>
<div class="ports">${ports.join(' ')}</div>${from.length ? `<div class="froms">${from.join(' ')}</div>` : ''}
${body}</div>`;
}

function podChip(p) {
  const title = `${p.phase}${p.ip ? ' · ' + p.ip : ''}${p.terminating ? ' · terminating' : ''}`;
  return `<span class="chip">${dot(p.ready, title)}${objLink('pods', p.namespace, p.name, nsFilter ? p.name : p.namespace + '/' + p.name)}</span>`;
}

function podPip(p) {
  return { ok: p.ready, ns: p.namespace, name: p.name, title: `${p.namespace}/${p.name} ${p.ip || ''} ${p.phase}` };
}

function nodeCard(n, ix) {
  const pods = ix.podsByNode.get(n.name) || [];
  const status = n.ready ? 'Ready' : 'NotReady';
  const meta = [esc(n.ip || ''), status, n.unschedulable ? 'cordoned' : '', count(pods.length, 'pod', 'pods')].filter(Boolean).join(' · ');
  const cidr = n.podCIDR ? `<div class="meta">podCIDR ${esc(n.podCIDR)}</div>` : '';
  return `<div class="card node" id="node-${esc(n.name)}">
<div class="head">${tag('nodes')} ${dot(n.ready, status)}${objLink('nodes', '', n.name)} <span class="meta">${meta}</span></div>${cidr}
<div class="chips">${bigGroup('node:' + n.name, pods.map(podChip), pods.map(podPip))}</div></div>`;
}

function looseCards(ix) {
  const byNs = new Map();
  for (const p of ix.by.pods) {
    if (ix.served.has(p.namespace + '/' + p.name)) continue;
    if (!byNs.has(p.namespace)) byNs.set(p.namespace, []);
    byNs.get(p.namespace).push(p);
  }
  return [...byNs.entries()].map(([ns, pods]) => ({
    key: 'loose:' + ns,
    html: `<div class="card loose"><div class="head">${tag('pods')} <span class="meta">namespace ${esc(ns)} · ${count(pods.length, 'pod', 'pods')}</span></div><div class="chips">${bigGroup('loose:' + ns, pods.map(podChip), pods.map(podPip))}</div></div>`,
  }));
}

// Replaces only the cards whose HTML changed; rebuilds a section when its cards come or go.
const rendered = new WeakMap();
function patch(el, cards, empty) {
  const keys = cards.map((c) => c.key).join('\n');
  const prev = rendered.get(el);
  if (!prev || prev.keys !== keys) {
    el.innerHTML = cards.length ? cards.map((c) => c.html).join('') : `<p class="empty">${esc(empty)}</p>`;
    rendered.set(el, { keys, html: cards.map((c) => c.html) });
    return;
  }
  cards.forEach((c, i) => {
    if (prev.html[i] !== c.html && el.children[i]) {
      el.children[i].outerHTML = c.html;
      prev.html[i] = c.html;
    }
  });
}

function render() {
  const ix = index();
  patch(document.getElementById('ingresses'), ix.by.ingresses.map((o) => ({ key: o.id, html: ingressCard(o) })), 'no ingresses');
  patch(document.getElementById('services'), ix.by.services.map((o) => ({ key: o.id, html: serviceCard(o, ix) })), 'no services');
  patch(document.getElementById('nodes'), ix.by.nodes.map((o) => ({ key: o.id, html: nodeCard(o, ix) })), 'no nodes');
  patch(document.getElementById('loose'), looseCards(ix), 'none');
  const c = ix.by;
  const ready = c.pods.filter((p) => p.ready).length;
  document.getElementById('counts').textContent =
    `${count(c.ingresses.length, 'ingress', 'ingresses')} · ${count(c.services.length, 'service', 'services')} · ` +
    `${count(c.endpointslices.length, 'slice', 'slices')} · ${count(c.pods.length, 'pod', 'pods')} (${ready} ready) · ${count(c.nodes.length, 'node', 'nodes')}`;
  const sel = document.getElementById('ns');
  const want = ['', ...[...ix.namespaces].sort()];
  if ([...sel.options].map((o) => o.value).join('\n') !== want.join('\n')) {
    sel.innerHTML = want.map((ns) => `<option value="${esc(ns)}">${ns ? esc(ns) : 'all'}</option>`).join('');
    sel.value = nsFilter;
  }
}

function setStatus(text, cls) {
  const el = document.getElementById('status');
  el.textContent = text;
  el.className = 'status ' + (cls || '');
}

async function showObject(kind, ns, name) {
  selected = { id: `${kind}/${ns}/${name}`, kind, ns, name };
  const token = ++panelToken;
  const detail = document.getElementById('detail');
  const title = `${KIND_LABEL[kind] || kind} ${ns ? ns + '/' : ''}${name}`;
  if (!detail.querySelector('pre.json') || detail.dataset.id !== selected.id) {
    detail.innerHTML = `<h3>${esc(title)}</h3><p class="meta">reading the store…</p>`;
  }
  detail.dataset.id = selected.id;
  const q = new URLSearchParams({ kind, namespace: ns, name });
  try {
    const resp = await fetch('/xray/api/object?' + q);
    if (!resp.ok) throw new Error(await resp.text());
    const o = await resp.json();
    if (token !== panelToken) return;
    detail.innerHTML = `<h3>${esc(title)}</h3>
<dl><dt>etcd key</dt><dd><code>${esc(o.key)}</code></dd>
<dt>mod_revision</dt><dd>${esc(o.mod_revision)} <span class="meta">(its resourceVersion)</span></dd>
<dt>create_revision</dt><dd>${esc(o.create_revision)}</dd><dt>version</dt><dd>${esc(o.version)} <span class="meta">writes since created</span></dd>
<dt>size</dt><dd>${esc(o.size)} bytes</dd></dl>
<button class="reload" data-kind="${esc(kind)}" data-ns="${esc(ns)}" data-name="${esc(name)}">read again</button>
<pre class="json">${esc(JSON.stringify(o.value, null, 2))}</pre>`;
  } catch (e) {
    if (token !== panelToken) return;
    detail.innerHTML = `<h3>${esc(title)}</h3><pre class="error">${esc(e.message)}</pre>`;
  }
}

async function showRoute(params) {
  selected = null;
  const token = ++panelToken;
  const detail = document.getElementById('detail');
  detail.dataset.id = '';
  const q = new URLSearchParams(params);
  const what = q.get('host') ? `${q.get('host')}${q.get('path') || '/'}` : `service ${q.get('namespace')}/${q.get('service')}${q.get('port') ? ':' + q.get('port') : ''}`;
  detail.innerHTML = `<h3>Route ${esc(what)}</h3><p class="meta">tracing and probing…</p>`;
  try {
    const resp = await fetch('/xray/api/route?' + q);
    if (!resp.ok) throw new Error(await resp.text());
    const r = await resp.json();
    if (token !== panelToken) return;
    detail.innerHTML = `<h3>Route ${esc(what)}</h3><pre class="route">${esc(r.text)}</pre><h4>Probe</h4><pre class="route">${esc(r.probe)}</pre>`;
  } catch (e) {
    if (token !== panelToken) return;
    detail.innerHTML = `<h3>Route ${esc(what)}</h3><pre class="error">${esc(e.message)}</pre>`;
  }
}

document.addEventListener('click', (ev) => {
  const t = ev.target.closest('a.obj, button.reload, a.route, button.fold');
  if (!t) return;
  ev.preventDefault();
  if (t.matches('a.obj, button.reload')) showObject(t.dataset.kind, t.dataset.ns, t.dataset.name);
  else if (t.matches('a.route')) showRoute(t.dataset.route);
  else {
    const g = t.dataset.group;
    if (opened.has(g)) opened.delete(g);
    else opened.add(g);
    render();
  }
});

document.getElementById('ns').addEventListener('change', (ev) => {
  nsFilter = ev.target.value;
  render();
});

function connect() {
  const es = new EventSource('/xray/api/events');
  es.addEventListener('snapshot', (e) => {
    applySnapshot(JSON.parse(e.data));
    setStatus('live', 'live');
    schedule();
  });
  es.addEventListener('batch', (e) => {
    applyBatch(JSON.parse(e.data));
    setStatus('live', 'live');
    schedule();
  });
  es.onerror = () => setStatus('reconnecting…', 'down');
}

const embedded = document.getElementById('snapshot');
if (embedded) {
  try {
    applySnapshot(JSON.parse(embedded.textContent));
  } catch (e) {
    setStatus('bad snapshot', 'down');
  }
}
render();
setStatus('connecting…');
connect();
