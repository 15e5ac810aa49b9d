// minigate chat: images attached to a message (issue 15). Attach button or paste into the message box;
// thumbnails with a remove button; a model that does not take images is named, and Send waits until the images
// are removed or the model changed. The file input itself is what the form sends (multipart/form-data).
(function () {
  "use strict";
  var TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif"];

  function parts() {
    var box = document.getElementById("attach");
    if (!box) return null;
    var input = document.getElementById("attach-input");
    return {
      box: box, input: input, form: input.form,
      thumbs: document.getElementById("attach-thumbs"),
      note: document.getElementById("attach-note"),
      max: Number(box.getAttribute("data-max-images")) || 4,
      maxBytes: Number(box.getAttribute("data-max-bytes")) || 5000000
    };
  }

  // The model the message goes to: the picker that belongs to the composer, else the conversation's own.
  function model(p) {
    var picker = document.querySelector('select[name="model"][form="' + p.form.id + '"]') ||
      p.form.querySelector('select[name="model"]');
    return picker ? picker.value : (p.box.getAttribute("data-model") || "");
  }

  function takesImages(p) {
    var names = [];
    try { names = JSON.parse(p.box.getAttribute("data-vision-models") || "[]"); } catch (e) { names = []; }
    return names.indexOf(model(p)) >= 0;
  }

  var problem = ""; // why the last files were (partly) refused, shown until the next change

  function blocked(p) { return p.input.files.length > 0 && !takesImages(p); }

  function update(p) {
    var send = document.getElementById("send");
    var stop = blocked(p);
    var text = stop ? model(p) + " does not take images: remove them, or choose a model that does." : problem;
    p.note.textContent = text;
    p.note.hidden = !text;
    p.box.classList.toggle("attach-blocked", stop);
    if (send) {
      // app.js disables Send while an answer streams; only undo what this script did.
      if (stop) { send.disabled = true; send.setAttribute("data-attach-blocked", ""); }
      else if (send.hasAttribute("data-attach-blocked")) { send.disabled = false; send.removeAttribute("data-attach-blocked"); }
    }
  }

  function render(p) {
    p.thumbs.textContent = "";
    Array.prototype.forEach.call(p.input.files, function (file, index) {
      var item = document.createElement("li");
      var img = document.createElement("img");
      img.alt = file.name || "Pasted image";
      var reader = new FileReader(); // a data: URL: the page's CSP allows those, not blob: ones
      reader.onload = function () { img.src = reader.result; };
      reader.readAsDataURL(file);
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "attach-remove";
      remove.textContent = "×";
      remove.setAttribute("aria-label", "Remove " + (file.name || "image " + (index + 1)));
      remove.setAttribute("data-index", String(index));
      item.appendChild(img);
      item.appendChild(remove);
      p.thumbs.appendChild(item);
    });
    p.thumbs.hidden = p.input.files.length === 0;
    update(p);
  }

  // The input holds the images: kept ones first, then new ones while they fit; the others are named in the note.
  function setFiles(p, kept, added) {
    var box = new DataTransfer(), count = 0, refused = [];
    kept.concat(added).forEach(function (file) {
      if (TYPES.indexOf(file.type) < 0) refused.push((file.name || "a file") + " is not a PNG, JPEG, WebP or GIF image");
      else if (file.size > p.maxBytes) refused.push((file.name || "an image") + " is larger than " + p.maxBytes / 1000000 + " MB");
      else if (count >= p.max) refused.push("at most " + p.max + " images go with a message");
      else { box.items.add(file); count += 1; }
    });
    attached = Array.prototype.slice.call(box.files);
    problem = refused.length ? refused.filter(function (v, i, a) { return a.indexOf(v) === i; }).join("; ") + "." : "";
    p.input.files = box.files;
    render(p);
  }

  var attached = []; // the images so far: a pick replaces the input's files, and is added to these
  document.addEventListener("click", function (evt) {
    var p = parts();
    if (!p) return;
    var target = evt.target;
    if (target.id === "attach-button") {
      p.input.click();
    } else if (target.classList && target.classList.contains("attach-remove")) {
      var index = Number(target.getAttribute("data-index"));
      var files = Array.prototype.slice.call(p.input.files);
      files.splice(index, 1);
      setFiles(p, files, []);
      document.getElementById("content").focus();
    }
  });

  document.addEventListener("change", function (evt) {
    var p = parts();
    if (!p) return;
    if (evt.target === p.input) {
      setFiles(p, attached, Array.prototype.slice.call(p.input.files));
    } else if (evt.target.name === "model") {
      update(p);
    }
  });

  document.addEventListener("paste", function (evt) {
    var p = parts();
    var data = evt.clipboardData;
    if (!p || !data || !p.form.contains(evt.target)) return;
    var images = Array.prototype.filter.call(data.files || [], function (f) { return f.type.indexOf("image/") === 0; });
    if (!images.length) return; // text pastes as text
    evt.preventDefault();
    setFiles(p, attached, images);
  });

  // Enter in the message box submits without the Send button: refuse here too while the model cannot take them.
  document.addEventListener("submit", function (evt) {
    var p = parts();
    if (p && evt.target === p.form && blocked(p) && !(evt.submitter && evt.submitter.id === "regenerate")) {
      evt.preventDefault();
      evt.stopImmediatePropagation();
      update(p);
    }
  }, true);

  // The answer's first event shows the sent message: its images are on the server now (SSE skips before:response).
  document.addEventListener("htmx:after:swap", function (evt) {
    var p = parts(), ctx = evt.detail && evt.detail.ctx;
    if (p && evt.target === p.form && ctx && ctx.response && ctx.response.status === 200 && p.input.files.length) {
      setFiles(p, [], []); // sent with the message
    }
  });

  document.addEventListener("htmx:finally:request", function () {
    var p = parts();
    if (p) update(p); // app.js enables Send when an answer ends
  });

  document.addEventListener("DOMContentLoaded", function () {
    var p = parts();
    if (!p) return;
    p.form.enctype = "multipart/form-data"; // htmx 4 keeps files only in a multipart form's body
    p.input.hidden = true;
    document.getElementById("attach-button").hidden = false;
    attached = Array.prototype.slice.call(p.input.files); // a reload may keep the chosen files
    if (attached.length) render(p);
  });
})();
