-- The API entries that nbdev's show_doc writes are Python code blocks: a signature with a comment on each
-- parameter. Two things in them cannot render inside a code block, so this filter tidies them:
--   * nbdev turns a backticked name in a parameter's comment into a Markdown link, [`Name`](url), which a
--     code block shows as raw text: keep the backticked name;
--   * a parameter with the default None and no annotation is shown as `name:NoneType=None`, an annotation
--     nobody wrote: show `name=None`.
-- Only code blocks that start like a signature (`def ` or `async def `) are touched.
function CodeBlock(el)
  if not (el.text:match('^def ') or el.text:match('^async def ')) then return nil end
  local text = el.text:gsub('%[(`[^`\n]+`)%]%([^%s%)]*%)', '%1'):gsub(':NoneType=', '=')
  if text == el.text then return nil end
  el.text = text
  return el
end
