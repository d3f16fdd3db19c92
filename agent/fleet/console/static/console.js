// Fleet table: a click on a column header sorts by it (again: the other way round).
document.body.addEventListener("click", function (event) {
  var link = event.target.closest("a.sort");
  if (!link) return;
  event.preventDefault();
  var sort = document.getElementById("sort");
  var desc = document.getElementById("desc");
  desc.value = sort.value === link.dataset.sort && desc.value !== "1" ? "1" : "";
  sort.value = link.dataset.sort;
  document.body.dispatchEvent(new Event("sorted"));
});
