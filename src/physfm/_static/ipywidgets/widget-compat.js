// Two fixes that let the widget manager (embed.js) work in the book's pages. Part of physfm
// (MIT licence), not of the widget manager; it must load before embed.js.
//
// 1. Icons. The widgets' icons (the Play button's play, pause, stop and repeat) are Font
//    Awesome 5 font glyphs, styled by the widget manager's CSS, in <i class="fa fa-play">
//    elements. The book's theme runs Font Awesome 6's script, which replaces every such <i> in
//    the page by an <svg>; the Play widget then finds no <i> to switch from play to pause and
//    throws. Font Awesome's script leaves alone an element that carries the attribute
//    data-fa-i2svg (the mark of one it has drawn), so every <i> inside a widget gets it as soon
//    as the widget manager adds it. This script runs before Font Awesome's (which the theme
//    loads deferred), so its observer sees each new element first.
// 2. MathJax. The widget manager typesets widget labels with MathJax 2's API,
//    MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]), whenever window.MathJax exists; the
//    book serves MathJax 3, which has no Hub, so each label threw a TypeError. Once the page has
//    loaded (before the widget manager renders, on the same event), a MathJax 3 gets a Hub whose
//    Queue typesets through MathJax 3's typesetPromise.
(() => {
  const mark = (node) => {
    if (node.nodeType !== Node.ELEMENT_NODE || !node.closest(".widget-subarea")) return;
    if (node.tagName === "I") node.setAttribute("data-fa-i2svg", "");
    for (const icon of node.querySelectorAll("i")) icon.setAttribute("data-fa-i2svg", "");
  };
  new MutationObserver((records) => {
    for (const record of records) record.addedNodes.forEach(mark);
  }).observe(document.documentElement, { childList: true, subtree: true });

  window.addEventListener("load", () => {
    const mathjax = window.MathJax;
    if (!mathjax || mathjax.Hub || typeof mathjax.typesetPromise !== "function") return;
    mathjax.Hub = {
      Queue: (...jobs) => {
        for (const job of jobs) {
          if (Array.isArray(job) && job[0] === "Typeset" && job[2])
            (mathjax.startup && mathjax.startup.promise ? mathjax.startup.promise : Promise.resolve())
              .then(() => mathjax.typesetPromise([job[2]]))
              .catch((error) => console.warn("widget label not typeset:", error));
        }
      },
    };
  });
})();
