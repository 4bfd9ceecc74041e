// Live worklist: fetch the table body again every few seconds with the page's own filters (no library).
(function () {
  'use strict';
  var live = document.getElementById('live');
  var rows = document.getElementById('rows');
  if (!live || !rows) return;
  var url = live.getAttribute('data-live') + window.location.search;
  var every = 3000;
  function refresh() {
    fetch(url, { credentials: 'same-origin', headers: { 'Accept': 'text/html-fragment' } })
      .then(function (response) {
        if (response.status === 401) {
          live.textContent = 'logged out: reload to log in';
          live.className = 'hint bad';
          return null;
        }
        if (!response.ok) throw new Error('HTTP ' + response.status);
        return response.text();
      })
      .then(function (html) {
        if (html === null) return;
        if (html !== rows.innerHTML) rows.innerHTML = html;
        live.textContent = 'live · ' + new Date().toLocaleTimeString();
        live.className = 'hint';
        window.setTimeout(refresh, every);
      })
      .catch(function (error) {
        live.textContent = 'not updating (' + error.message + '), retrying';
        live.className = 'hint bad';
        window.setTimeout(refresh, every * 2);
      });
  }
  window.setTimeout(refresh, every);
})();
