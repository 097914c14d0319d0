//! The terminal front end (ratatui + crossterm): one drawing function for a
//! [`View`], the keyboard-driven player, and the demo's spectator screen.

use std::io::{self, Stdout};
use std::time::Duration;

use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use futures::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::{Frame, Terminal, TerminalOptions, Viewport};
use tokio::net::ToSocketAddrs;

use super::client::{ClientError, ClientOptions, Outcome, Session};
use super::protocol::{Direction, FinalScores, GameEvent, Input, Pos};
use super::view::{final_text, result_line, wrap_tail, RoundView, View, LOG_LINES};

/// Rows the game screen uses: the arena and a help line on the left, the
/// scores and the last events on the right.
pub const SCREEN_HEIGHT: u16 = 8 + LOG_LINES as u16 + 2;
/// Columns the game screen uses at most.
pub const SCREEN_WIDTH: u16 = 90;
const PALETTE: [Color; 6] = [Color::Cyan, Color::Magenta, Color::Green, Color::Blue, Color::Red, Color::White];

/// Draws `view` into `frame`: the arena on the left, scores and recent
/// events on the right. `me` is highlighted.
pub fn draw(frame: &mut Frame, view: &View, me: Option<&str>) {
    let full = frame.area();
    let area = Rect { width: full.width.min(SCREEN_WIDTH), height: full.height.min(SCREEN_HEIGHT), ..full };
    let [board, side] = Layout::horizontal([Constraint::Length(42), Constraint::Min(24)]).areas(area);
    let [arena, help] = Layout::vertical([Constraint::Length(12), Constraint::Length(1)]).areas(board);
    let [scores, log] = Layout::vertical([Constraint::Min(3), Constraint::Length(LOG_LINES as u16 + 2)]).areas(side);
    match &view.round {
        Some(round) => frame.render_widget(arena_widget(round, me), arena),
        None => frame.render_widget(lobby_widget(view), arena),
    }
    frame.render_widget(help_line(view, me), help);
    frame.render_widget(scores_widget(view, me), scores);
    // Long lines wrap; the newest rows that fit are shown.
    let inner = (log.width.saturating_sub(2) as usize, log.height.saturating_sub(2) as usize);
    let rows = wrap_tail(view.log.iter().map(String::as_str), inner.0, inner.1);
    let lines: Vec<Line> = rows.into_iter().map(Line::from).collect();
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" events ")), log);
}

/// Under the arena: the keys while playing, the result once the round is over.
fn help_line(view: &View, me: Option<&str>) -> Paragraph<'static> {
    match (&view.finished, me) {
        (Some(scores), Some(_)) => Paragraph::new(format!("{} · any key exits", result_line(scores, me))).bold(),
        (Some(scores), None) => Paragraph::new(result_line(scores, None)).bold(),
        (None, Some(_)) => Paragraph::new("arrows/WASD move, q quits").dark_gray(),
        (None, None) => Paragraph::new("bots at play; watching").dark_gray(),
    }
}

fn lobby_widget(view: &View) -> Paragraph<'static> {
    let waiting = format!("waiting for players: {} of {}", view.lobby.len(), view.needed);
    let names = view.lobby.join(", ");
    Paragraph::new(vec![Line::from(waiting), Line::from(names)]).block(Block::bordered().title(" lobby "))
}

fn arena_widget(round: &RoundView, me: Option<&str>) -> Paragraph<'static> {
    let rows = (0..round.map.height)
        .map(|y| Line::from((0..round.map.width).map(|x| cell(round, me, Pos { x, y })).collect::<Vec<_>>()));
    let title = format!(" round {} · first to {} · tick {} ", round.number, round.target, round.snapshot.tick);
    Paragraph::new(rows.collect::<Vec<_>>()).block(Block::bordered().title(title))
}

/// Two characters for one cell.
fn cell(round: &RoundView, me: Option<&str>, pos: Pos) -> Span<'static> {
    let players = &round.snapshot.players;
    if let Some((index, player)) = players.iter().enumerate().find(|(_, p)| p.pos == pos) {
        let glyph: String = player.name.chars().chain(std::iter::repeat(' ')).take(2).collect();
        let style = Style::new().fg(PALETTE[index % PALETTE.len()]).add_modifier(Modifier::BOLD);
        let style = if Some(player.name.as_str()) == me { style.add_modifier(Modifier::REVERSED) } else { style };
        return Span::styled(glyph, style);
    }
    if round.map.walls.contains(&pos) {
        Span::styled("██", Style::new().fg(Color::DarkGray))
    } else if round.snapshot.items.contains(&pos) {
        Span::styled("◆ ", Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD))
    } else {
        Span::styled("· ", Style::new().fg(Color::DarkGray))
    }
}

fn scores_widget(view: &View, me: Option<&str>) -> Paragraph<'static> {
    let mut lines = Vec::new();
    if let Some(round) = &view.round {
        let mut players: Vec<_> = round.snapshot.players.iter().enumerate().collect();
        players.sort_by(|a, b| b.1.score.cmp(&a.1.score).then(a.1.name.cmp(&b.1.name)));
        for (index, player) in players {
            let marker = if Some(player.name.as_str()) == me { "▶ " } else { "  " };
            let color = PALETTE[index % PALETTE.len()];
            let text = format!("{marker}{:<16} {:>2}/{}", player.name, player.score, round.target);
            lines.push(Line::from(Span::styled(text, Style::new().fg(color))));
        }
        lines.push(Line::from(format!("  snapshots skipped: {}", round.skipped)).dark_gray());
    }
    if let Some(finished) = &view.finished {
        lines.push(Line::from(format!("  {}", result_line(finished, me))).bold());
    }
    Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::bordered().title(" scores "))
}

/// Plays one round from the keyboard in a full-screen terminal UI. Returns
/// the outcome, or `None` if the player quit (and left the game).
///
/// # Errors
///
/// A refused join, a lost server, or a terminal error. The terminal is
/// restored in every case.
pub async fn play(addr: impl ToSocketAddrs, name: &str) -> Result<Option<Outcome>, ClientError> {
    // A small window: if the screen falls behind, the server skips
    // snapshots rather than queueing them.
    let options = ClientOptions { events_capacity: 8, events_batch: 4, ..ClientOptions::default() };
    let mut session = Session::join(addr, name, &options).await?;
    let mut terminal = ratatui::try_init()?;
    let mut view = View::new();
    let ending = drive(&mut terminal, &mut session, &mut view).await;
    ratatui::restore();
    // Leaving the full-screen UI clears it: print the last picture where it stays.
    if let Some(text) = final_text(&view, Some(name)) {
        print!("{text}");
    }
    match ending? {
        Some(scores) => Ok(Some(session.finish(scores).await)),
        None => {
            session.leave(&format!("{name} pressed q")).await;
            Ok(None)
        }
    }
}

/// How long the final picture stays up when no key is pressed.
const RESULT_SHOWN_FOR: Duration = Duration::from_secs(30);

/// The UI loop: redraw, then wait for whichever comes first, an event from
/// the server or a key. At the end of the round the last picture and the
/// result stay up until a key is pressed. Returns the final scores, or
/// `None` on quit.
async fn drive(
    terminal: &mut ratatui::DefaultTerminal,
    session: &mut Session,
    view: &mut View,
) -> Result<Option<FinalScores>, ClientError> {
    let mut keys = EventStream::new();
    loop {
        terminal.draw(|frame| draw(frame, view, Some(session.name())))?;
        tokio::select! {
            event = session.next_event() => {
                let event = event?;
                view.apply(&event);
                if let GameEvent::EndGame(scores) = event {
                    terminal.draw(|frame| draw(frame, view, Some(session.name())))?;
                    let _ = tokio::time::timeout(RESULT_SHOWN_FOR, any_key(&mut keys)).await;
                    return Ok(Some(scores));
                }
            }
            key = keys.next() => match key_action(key)? {
                Action::Quit => return Ok(None),
                Action::Move(direction) => {
                    session.try_send(Input::Move(direction));
                }
                Action::Nothing => {}
            },
        }
    }
}

/// Waits for a key press (or for the terminal to go away).
async fn any_key(keys: &mut EventStream) {
    while let Some(Ok(event)) = keys.next().await {
        if matches!(event, Event::Key(key) if key.kind != KeyEventKind::Release) {
            return;
        }
    }
}

enum Action {
    Move(Direction),
    Quit,
    Nothing,
}

fn key_action(event: Option<io::Result<Event>>) -> io::Result<Action> {
    match event {
        None => Ok(Action::Quit), // the terminal went away
        Some(Err(err)) => Err(err),
        Some(Ok(Event::Key(key))) if key.kind != KeyEventKind::Release => Ok(key_to_action(key)),
        Some(Ok(_)) => Ok(Action::Nothing),
    }
}

fn key_to_action(key: KeyEvent) -> Action {
    match key.code {
        KeyCode::Up | KeyCode::Char('w') => Action::Move(Direction::Up),
        KeyCode::Down | KeyCode::Char('s') => Action::Move(Direction::Down),
        KeyCode::Left | KeyCode::Char('a') => Action::Move(Direction::Left),
        KeyCode::Right | KeyCode::Char('d') => Action::Move(Direction::Right),
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Action::Quit,
        _ => Action::Nothing,
    }
}

/// A live picture of the game drawn in place, below the shell prompt (the
/// demo uses it); the last picture stays on screen.
pub struct Spectator {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Spectator {
    /// Reserves [`SCREEN_HEIGHT`] rows at the cursor.
    ///
    /// # Errors
    ///
    /// When stdout is not a terminal whose size can be read.
    pub fn new() -> io::Result<Self> {
        let viewport = Viewport::Inline(SCREEN_HEIGHT);
        let terminal = Terminal::with_options(CrosstermBackend::new(io::stdout()), TerminalOptions { viewport })?;
        Ok(Spectator { terminal })
    }

    /// Draws `view`.
    ///
    /// # Errors
    ///
    /// When writing to the terminal fails.
    pub fn show(&mut self, view: &View) -> io::Result<()> {
        self.terminal.draw(|frame| draw(frame, view, None)).map(drop)
    }

    /// Leaves the last picture on screen and puts the cursor below it.
    ///
    /// # Errors
    ///
    /// When writing to the terminal fails.
    pub fn finish(mut self) -> io::Result<()> {
        let area: Rect = self.terminal.get_frame().area();
        self.terminal.set_cursor_position((0, area.bottom()))?;
        self.terminal.show_cursor()?;
        println!();
        Ok(())
    }
}
