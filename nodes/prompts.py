"""Every prompt the graphs send, as named templates. The user's `prompt_template` is appended."""

TRIAGE_SYSTEM = """\
You sort the files of a freelancer's folders into the projects of their project-management app.

You get a manifest of changed files and the user's existing projects. Put every file in
exactly one group: the id of the existing project it clearly belongs to (by folder name,
file name or path), or "standalone" when no project fits. Use paths exactly as given.
Answer only by calling {tool_name}.
{user_instructions}"""

TRIAGE_REQUEST = """\
Existing projects and changed files (chunk {chunk} of {chunks}) follow as JSON."""

TRIAGE_PROJECTS_LEFT_OUT = (
    "{count} more projects exist that are not listed (those listed are the most like these "
    'paths); use "standalone" when none of the listed ones fits.'
)

TRIAGE_RETRY = """\
Your previous answer could not be used: {error}
Answer again by calling {tool_name}, with every file of the manifest exactly once."""

PROCESSING_SYSTEM = """\
You keep a freelancer's project-management app up to date from their files.

You get the content of some files and the records that already exist. Extract only what the
files clearly say, and only these record types: {data_types}. {project_context}

Update before you create:
- a task, note or timeline entry that matches an existing one by title or meaning is
  updated (update_task, add_task_comment, update_note with merged content, update_timeline);
- only what has no match is created (create_task, create_note, create_timeline,
  create_project when a significant project is missing);
- task states are "ToDo", "In Progress" or "Completed"; dates are YYYY-MM-DD.
Make all the calls you need in one answer; when the records are up to date, reply with a
one-paragraph summary of what you created and updated, and call no tool.
{user_instructions}"""

PROJECT_CONTEXT = "These files belong to the existing project {project_id}: use it as projectId."
STANDALONE_CONTEXT = (
    "These files belong to no existing project; use the top folder as a hint for projectId."
)

PROCESSING_REQUEST = """\
The files and the existing records that match them follow as JSON. A file may come in parts:
then `part` says which, and `context_before` repeats the end of the previous part, for
reading only (extract nothing from it). Use find_records to look for other existing records
before you create one."""

CANDIDATES_INCOMPLETE = (
    "Not every matching record could be listed: search with find_records before creating."
)

PART_LABEL = "part {part} of {parts} (characters {start}-{end} of {total})"

PLAN_SYSTEM = """\
You plan work for a freelancer's assistant that acts on their computer and their
project-management app. Break the task into at most {max_steps} concrete steps, in order,
each one a single instruction that can be carried out with the available tools.
Answer only by calling {tool_name}.
{user_instructions}"""

PLAN_REQUEST = "Task: {task}"

STEP_SYSTEM = """\
You carry out one step of a larger task for a freelancer, using the tools (they run on the
user's computer and in their project-management app). Do only this step. When it is done,
or cannot be done, call {verdict_tool} with whether it succeeded and what you did.
{user_instructions}"""

STEP_REQUEST = """\
Task: {task}
Step {number} of {total}: {step}
Results of the previous steps:
{recent}"""

NO_RECENT_RESULTS = "(this is the first step)"

ADAPT_REQUEST = """\
Task: {task}
Step {number} of {total} failed: {step}
The error was: {error}
Find an alternative approach to reach this step's goal and carry it out now. When it is
done, or cannot be done, call {verdict_tool}."""

FINAL_ANSWER = """\
The step budget for this group is used up. Call no more tools: summarise what was created
and updated, and what is left undone."""

RESULT_LEFT_OUT = (
    "[This result ({chars} characters) is left out to keep the request within the token "
    "budget; call the tool again if you still need it.]"
)

TURNS_LEFT_OUT = """\
Turns of this conversation are left out to keep the request within the token budget. The
calls you made in them are done (the device stored their results); do not repeat them:
{calls}"""

MORE_CALLS = "- and {count} more calls"

USER_INSTRUCTIONS = "\nInstructions from the user:\n{prompt_template}\n"


def user_instructions(prompt_template: str | None) -> str:
    """The user's own instructions, as a prompt section (empty when there are none)."""
    return USER_INSTRUCTIONS.format(prompt_template=prompt_template) if prompt_template else ""
