"""Languages: which ones the engine speaks, how a visitor's is chosen, and the interface text.

A language is a folder ``i18n/locales/<identifier>/LC_MESSAGES/messages.po`` (a gettext
catalog, Babel's identifier: ``es``, ``ar``, ``zh_Hans``): adding one is adding that file (and,
for a service's own titles and labels, translation files beside its definition). Everything
outside this room names languages by their BCP 47 tag (``zh-Hans``), as HTML's ``lang`` and
HTTP's ``Accept-Language`` do.

This room imports nothing of the engine: the pages (:mod:`intake.pages`), the emails
(:mod:`activities`) and the command line all read it.
"""
