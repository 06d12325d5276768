/* The PayTR emulator's stand-in for PayTR's /js/iframeResizer.min.js (our own few lines, not the
   iframe-resizer project's). PayTR's guide has the merchant's page load that script and call
   iFrameResize({}, '#paytriframe'); this defines the same function, so the checkout calls it the same
   way whichever PayTR it talks to.

   Protocol (both ends are ours): the parent sends "[iFrameSizer]<id>:init" to the frame's window,
   only to the frame's own origin; the payment page answers "[iFrameSizer]<id>:<height>:<width>:<type>"
   to the origin that asked, on load, on resize and whenever its content changes. The parent takes
   only messages from that frame's window and origin, in that format, with a sane height. */
(function () {
  "use strict";
  var PREFIX = "[iFrameSizer]";

  function originOf(frame) {
    try { return new URL(frame.src, document.baseURI).origin; } catch (error) { return null; }
  }

  function watch(frame, options) {
    var id = frame.id || "iFrameResizer" + Math.random().toString(36).slice(2);
    var origin = originOf(frame);
    if (!origin) return;
    frame.id = id;
    var init = function () {
      if (frame.contentWindow) frame.contentWindow.postMessage(PREFIX + id + ":init", origin);
    };
    window.addEventListener("message", function (event) {
      if (event.source !== frame.contentWindow || event.origin !== origin) return;
      if (typeof event.data !== "string" || event.data.indexOf(PREFIX + id + ":") !== 0) return;
      var parts = event.data.slice(PREFIX.length + id.length + 1).split(":");
      var height = parseInt(parts[0], 10);
      if (!(height > 0 && height < 100000)) return;
      // Only once the page reports its height: a page that never answers keeps its scrollbar.
      frame.setAttribute("scrolling", "no");
      frame.style.height = height + "px";
      if (typeof options.onResized === "function") options.onResized({ iframe: frame, height: height, type: parts[2] });
    });
    frame.addEventListener("load", init);  // every page the frame shows (a form sent with errors, too)
    init();  // the frame may have loaded before this script ran
  }

  window.iFrameResize = function (options, target) {
    var frames = typeof target === "string" ? document.querySelectorAll(target) : target ? [target] : [];
    Array.prototype.forEach.call(frames, function (frame) {
      if (frame && frame.tagName === "IFRAME") watch(frame, options || {});
    });
    return frames;
  };
})();
