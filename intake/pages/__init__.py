"""The front door in the browser: server-rendered pages on the U.S. Web Design System.

Every page works without JavaScript (forms post, links link) and is enhanced with it (live
status by server-sent events). Pages speak the visitor's language (:mod:`i18n`), are built from
the service definitions alone (no page is written for one service), and reach the engine
through the same objects the JSON API uses — a page is another door onto the same rooms, never
a second implementation of a rule.

Modules: :mod:`.render` (templates, language, the layout's context), :mod:`.forms` (form
bodies and CSRF), :mod:`.session` (the signed session cookie), :mod:`.router` (the routes of
the catalogue and the language switch; the other page families add their own routers),
:mod:`.assets` (vendoring USWDS).
"""
