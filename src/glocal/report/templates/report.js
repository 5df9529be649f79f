// The report's only behaviour: open a concept's card (a <dialog>) and show the graph node under the pointer.
// Written for this page, no library; works from a file:// URL with no network.

for (const button of document.querySelectorAll("button.open-card")) {
  button.addEventListener("click", () => {
    const card = document.getElementById(button.dataset.card);
    if (card && !card.open) card.showModal();
  });
}

for (const card of document.querySelectorAll("dialog.card")) {
  card.addEventListener("click", (event) => {
    if (event.target === card) card.close(); // a click on the backdrop
  });
}

for (const graph of document.querySelectorAll(".graph")) {
  const nodes = graph.querySelectorAll(".node");
  const show = (node) => {
    for (const other of nodes) other.classList.toggle("active", other === node);
    for (const info of graph.querySelectorAll(".node-info")) info.hidden = info.id !== node.dataset.node;
  };
  for (const node of nodes) {
    node.addEventListener("mouseenter", () => show(node));
    node.addEventListener("focus", () => show(node));
    node.addEventListener("click", () => show(node));
  }
  if (nodes.length) nodes[0].classList.add("active");
}
