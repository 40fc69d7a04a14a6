// The widgets' icons (the Play button's play, pause, stop and repeat) are Font Awesome 5 font
// glyphs, styled by the widget manager's CSS, in <i class="fa fa-play"> elements. The book's
// theme runs Font Awesome 6's script, which replaces every such <i> in the page by an <svg>;
// the Play widget then finds no <i> to switch from play to pause and throws. Font Awesome's
// script leaves alone an element that carries the attribute data-fa-i2svg (the mark of one it
// has drawn), so every <i> inside a widget gets it, as soon as the widget manager adds it. This
// script must run before Font Awesome's (which the theme loads deferred), so that its observer
// sees each new element first. Part of physfm (MIT licence), not of the widget manager.
(() => {
  const mark = (node) => {
    if (node.nodeType !== Node.ELEMENT_NODE || !node.closest(".widget-subarea")) return;
    if (node.tagName === "I") node.setAttribute("data-fa-i2svg", "");
    for (const icon of node.querySelectorAll("i")) icon.setAttribute("data-fa-i2svg", "");
  };
  new MutationObserver((records) => {
    for (const record of records) record.addedNodes.forEach(mark);
  }).observe(document.documentElement, { childList: true, subtree: true });
})();
