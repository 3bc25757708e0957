"""Open pages in a real headless Chromium and report what a reader would see broken.

The browser is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages separated by NUL bytes, commands on the browser's fd 3, replies on its fd 4),
so nothing but the standard library is needed and no network port is opened.  For every
page: wait for the load event and for MathJax's first typesetting, then collect

* ``errors``: MathJax error nodes (``mjx-merror``: a TeX error such as ``\\tag`` in split);
* ``unrendered``: Sphinx math elements (``.math``) that hold no ``mjx-container``
  (MathJax missing, or a formula it did not typeset);
* ``stray``: text outside code, math and scripts that still shows ``$$``, ``\\tag{``,
  ``\\begin{`` or ``\\[`` (a formula the Markdown parser did not recognise as math), a
  ``$`` right next to a formula, or a numbered (``\\tag``) equation typeset inline (display
  math that the parser took for inline math);
* ``broken``: images that did not decode (``naturalWidth == 0``).
"""
from __future__ import annotations

import fcntl
import json
import os
import pathlib
import select
import shutil
import subprocess
import tempfile
import time

CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome",
              "chrome-headless-shell")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         "--disable-dev-shm-usage", "--remote-debugging-pipe")

INSPECT = r"""(async () => {
  if (location.href !== URL) throw new Error('not there yet: ' + location.href);
  if (document.readyState !== 'complete') await new Promise(r => addEventListener('load', r));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  await Promise.all([...document.images].map(i => i.complete ? null :
      new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })));
  const math = [...document.querySelectorAll('.math')];
  const skip = 'pre, code, script, style, mjx-container, .math, textarea, .highlight';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const stray = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const t = n.textContent;
    if (/\$\$|\\tag\{|\\begin\{|\\\[/.test(t) && !n.parentElement.closest(skip)) stray.push(t.trim().slice(0, 120));
  }
  for (const e of math) {  // display math the parser took for inline math: `$\(...\)$`
    const before = e.previousSibling, after = e.nextSibling;
    if ((before && before.nodeType === 3 && before.textContent.endsWith('$')) ||
        (after && after.nodeType === 3 && after.textContent.startsWith('$')))
      stray.push('$ around ' + e.textContent.trim().slice(0, 100));
    else if (e.tagName === 'SPAN' && /\\tag\{/.test(e.textContent))
      stray.push('numbered equation typeset inline: ' + e.textContent.trim().slice(0, 100));
  }
  return {
    mathjax: !!(window.MathJax && MathJax.startup),
    math: math.length,
    rendered: document.querySelectorAll('mjx-container').length,
    unrendered: math.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.trim().slice(0, 120)),
    errors: [...document.querySelectorAll('mjx-merror')].map(e => e.getAttribute('data-mjx-error') || e.textContent),
    images: document.images.length,
    broken: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    stray: stray,
  };
})()"""


def _above_nine(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


def find_browser() -> str | None:
    """The CHROMIUM environment variable, else the first Chromium-like program on PATH."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class Browser:
    """One headless browser; ``inspect(url)`` opens a tab, checks the page, closes the tab."""

    def __init__(self, program: str, timeout: float = 60.0):
        self.timeout, self.next_id, self.buffer = timeout, 0, b""
        self.profile = tempfile.mkdtemp(prefix="html-check-profile-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        # bash puts the browser's two pipe ends on fds 3 and 4, where Chromium expects them;
        # they are first moved above 9 so that neither already sits on 3 or 4 (and dash
        # cannot name fds above 9, hence bash)
        to_browser_r, from_browser_w = (_above_nine(fd) for fd in (to_browser_r, from_browser_w))
        cmd = ["bash", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "bash", program, *FLAGS,
               f"--user-data-dir={self.profile}", "about:blank"]
        self.proc = subprocess.Popen(cmd, pass_fds=(to_browser_r, from_browser_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)

    def close(self):
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - the browser may be gone already
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_browser)
        os.close(self.from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_browser], [], [], left)[0]:
                raise TimeoutError(f"the browser did not answer within {self.timeout:.0f} s")
            chunk = os.read(self.from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError(f"the browser exited (code {self.proc.poll()})")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, session: str | None = None, wait_event: str | None = None, **params):
        """Send one command; return its result (after the event ``wait_event`` when given)."""
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.to_browser, json.dumps(msg).encode() + b"\0")
        deadline, result, seen = time.monotonic() + self.timeout, None, wait_event is None
        while result is None or not seen:
            m = self._read_message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                result = m.get("result", {})
            elif result is not None and m.get("method") == wait_event and m.get("sessionId") == session:
                seen = True  # only after the reply: an earlier one belongs to the page before
        return result

    def inspect(self, url: str) -> dict:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        try:
            self.send("Page.enable", session)
            self.send("Page.navigate", session, wait_event="Page.loadEventFired", url=url)
            return self._evaluate(session, INSPECT.replace("URL", json.dumps(url)), url)
        finally:
            self.send("Target.closeTarget", targetId=target)


    def _evaluate(self, session: str, expression: str, url: str, tries: int = 20) -> dict:
        """The page check's result; retried while the tab is still between two documents."""
        for _ in range(tries):
            try:
                out = self.send("Runtime.evaluate", session, expression=expression, awaitPromise=True,
                                returnByValue=True)
            except RuntimeError as e:
                if "navigated" not in str(e) and "destroyed" not in str(e):
                    raise
                out = None
            if out and "exceptionDetails" not in out:
                return out["result"]["value"]
            time.sleep(0.1)
        raise RuntimeError(f"{url}: the page check failed: {out and out['exceptionDetails']}")


def problems(report: dict) -> list[str]:
    """Human-readable failures of one page's report (empty when the page is fine)."""
    out = [f"MathJax error: {e}" for e in report["errors"]]
    out += [f"formula not typeset: {t}" for t in report["unrendered"]]
    out += [f"raw TeX in the text: {t}" for t in report["stray"]]
    out += [f"broken image: {s}" for s in report["broken"]]
    if report["math"] and not report["mathjax"]:
        out.append("MathJax did not load")
    return out


def check_site(site: pathlib.Path, program: str) -> dict[str, dict]:
    """{page name: report} for every top-level .html page of a built site (index.html only
    redirects to the first page; the index and search pages have no content of their own)."""
    skip = ("index.html", "genindex.html", "search.html")
    pages = sorted(p for p in site.glob("*.html") if p.name not in skip)
    with Browser(program) as browser:
        return {p.name: browser.inspect(p.resolve().as_uri()) for p in pages}
