/* The emulator's payment page, inside the merchant's iframe: tells the page that framed it how tall
   it is, so the merchant's iFrameResize() can size the frame with no scrollbar inside it. It answers
   only a parent that asked ("[iFrameSizer]<id>:init", see iframe_resizer_parent.js), and only to that
   parent's origin. */
(function () {
  "use strict";
  var PREFIX = "[iFrameSizer]";
  if (window.parent === window) return;
  var parentOrigin = null, frameId = null, last = 0, queued = false;

  function height() {
    // The page's own height (margins included), not the frame's: the frame may be taller than it.
    return Math.ceil(document.documentElement.getBoundingClientRect().height);
  }

  function report(type) {
    if (!parentOrigin) return;
    var now = height();
    if (type !== "init" && now === last) return;
    last = now;
    window.parent.postMessage(PREFIX + frameId + ":" + now + ":" + document.documentElement.scrollWidth + ":" + type,
                              parentOrigin);
  }

  function soon(type) {
    if (queued) return;
    queued = true;
    window.requestAnimationFrame(function () { queued = false; report(type); });
  }

  window.addEventListener("message", function (event) {
    if (event.source !== window.parent || typeof event.data !== "string") return;
    var match = /^\[iFrameSizer\]([\w-]+):init$/.exec(event.data);
    if (!match) return;
    parentOrigin = event.origin;
    frameId = match[1];
    report("init");
  });
  window.addEventListener("load", function () { soon("load"); });
  window.addEventListener("resize", function () { soon("resize"); });
  if (window.MutationObserver) {
    new MutationObserver(function () { soon("mutation"); })
      .observe(document.documentElement, { attributes: true, childList: true, subtree: true, characterData: true });
  }
})();
